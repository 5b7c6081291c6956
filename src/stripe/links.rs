//! Links into Stripe's Dashboard, for the merchant's dashboard and alerts.
//! Ids are checked before they go into a URL; test-mode objects live under
//! `/test`, and a connected account's under its id.

use super::types::is_object_id;
use crate::model::SessionRecord;

const DASHBOARD: &str = "https://dashboard.stripe.com";

fn page(rec: &SessionRecord, path: &str) -> String {
    let account = rec
        .account
        .as_deref()
        .filter(|a| is_object_id(a, "acct_"))
        .map(|a| format!("/{a}"))
        .unwrap_or_default();
    let mode = if rec.livemode { "" } else { "/test" };
    format!("{DASHBOARD}{account}{mode}/{path}")
}

/// The session's payment in Stripe's Dashboard.
pub fn payment(rec: &SessionRecord) -> Option<String> {
    let pi = rec.payment_intent.as_deref()?;
    is_object_id(pi, "pi_").then(|| page(rec, &format!("payments/{pi}")))
}

/// The subscription a `subscription`-mode session created.
pub fn subscription(rec: &SessionRecord) -> Option<String> {
    let sub = rec.subscription.as_deref()?;
    is_object_id(sub, "sub_").then(|| page(rec, &format!("subscriptions/{sub}")))
}

/// The session in Stripe's Dashboard, through its search (which finds a
/// Checkout Session by id; ids are checked, so nothing needs encoding).
pub fn session(rec: &SessionRecord) -> String {
    page(rec, &format!("search?query={}", rec.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_mode_and_the_account_and_refuse_odd_ids() {
        let mut rec = SessionRecord::new("cs_test_1", 0, 0);
        rec.payment_intent = Some("pi_3Abc".into());
        assert_eq!(
            payment(&rec).as_deref(),
            Some("https://dashboard.stripe.com/test/payments/pi_3Abc")
        );
        rec.livemode = true;
        rec.account = Some("acct_1X".into());
        assert_eq!(
            payment(&rec).as_deref(),
            Some("https://dashboard.stripe.com/acct_1X/payments/pi_3Abc")
        );
        rec.payment_intent = Some("pi_1/../../x".into());
        assert_eq!(payment(&rec), None);
        rec.subscription = Some("sub_9".into());
        assert!(subscription(&rec).is_some_and(|u| u.ends_with("/subscriptions/sub_9")));
        assert_eq!(
            session(&rec),
            "https://dashboard.stripe.com/acct_1X/search?query=cs_test_1"
        );
    }
}
