//! Random sequences of events, claims, reads, callbacks, crashes and
//! restarts, checked against the invariants after every step. The session's
//! job in the durable queue is modelled from the steps' effects, with the
//! worker's rule that a job whose due time nobody moved is done.

use proptest::prelude::*;

use super::{ID, KEY, NOW, fetched, policy, snap};
use crate::{
    domain::{ClaimToken, Effect, Env, EventKind, Input, Read, Reply, Session, ids, step},
    model::{State, Trigger},
};

#[derive(Debug, Clone)]
enum Op {
    /// Stripe sends an event of this kind about the session (truth permitting).
    Event(u8),
    /// The customer's delayed payment settles: 0 paid, 1 failed.
    Settle(u8),
    /// Process `p` asks to fulfil (trigger index; force).
    Claim(u8, u8, bool),
    /// Process `p`'s attempt gets its read: 0 true, 1 stale unpaid, 2 transient error, 3 not found.
    Read(u8, u8),
    /// Process `p` reads first (as `Read`), then claims and records in one
    /// step (trigger index; force; read; an event came during the read).
    ClaimRead(u8, u8, bool, u8, bool),
    /// Process `p`'s callback: acknowledged or not.
    Callback(u8, bool),
    /// Every process crashes; a new one starts and takes over.
    Restart,
    /// Time passes.
    Wait(u32),
    Reconcile,
    /// Process `p`'s worker runs the session's job, if one is due.
    RunJob(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Event),
        (0u8..2).prop_map(Op::Settle),
        (0u8..2, 0u8..5, proptest::bool::weighted(0.1)).prop_map(|(p, t, f)| Op::Claim(p, t, f)),
        (0u8..2, 0u8..4).prop_map(|(p, r)| Op::Read(p, r)),
        (
            0u8..2,
            0u8..5,
            proptest::bool::weighted(0.1),
            0u8..4,
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(p, t, f, r, e)| Op::ClaimRead(p, t, f, r, e)),
        (0u8..2, any::<bool>()).prop_map(|(p, ok)| Op::Callback(p, ok)),
        Just(Op::Restart),
        (0u32..120_000).prop_map(Op::Wait),
        Just(Op::Reconcile),
        (0u8..2).prop_map(Op::RunJob),
    ]
}

#[derive(Default)]
struct Proc {
    owner: String,
    token: Option<ClaimToken>,
    pending: Option<String>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_sequence(ops in proptest::collection::vec(op(), 1..60), callbacks in any::<bool>()) {
        let p = policy(callbacks);
        let mut now = NOW;
        let mut session: Option<Session> = None;
        // What Stripe knows: 0 unpaid (processing), 1 paid, 2 failed.
        let mut truth = 0u8;
        let mut boots = 0;
        let mut procs = [Proc { owner: "boot_0a".into(), ..Proc::default() }, Proc { owner: "boot_0b".into(), ..Proc::default() }];
        let mut forced_claims = 0;
        let mut events = 0;
        // The due time of the session's fulfill job, if one is queued.
        let mut queue: Option<u64> = None;
        for op in ops {
            let before = session.as_ref().map(|s| s.rec.state);
            let fulfillments_before = session.as_ref().map_or(0, |s| s.detail.fulfillments.len());
            let (owner, input) = match op.clone() {
                Op::Event(k) => {
                    events += 1;
                    let (kind, status) = match (k, truth) {
                        (0, 0) => (EventKind::Completed, "unpaid"),
                        (0, 1) => (EventKind::Completed, "paid"),
                        (_, 1) => (EventKind::AsyncPaymentSucceeded, "paid"),
                        (_, 2) => (EventKind::AsyncPaymentFailed, "unpaid"),
                        _ => (EventKind::Completed, "unpaid"),
                    };
                    let input = Input::Event { id: format!("evt_{events}"), kind, snapshot: snap(status, "complete"), object: serde_json::Value::Null };
                    (procs[0].owner.clone(), input)
                }
                Op::Settle(outcome) => {
                    if truth == 0 { truth = 1 + outcome; }
                    continue;
                }
                Op::Claim(i, t, force) => {
                    let trigger = [Trigger::Webhook, Trigger::LandingPage, Trigger::Admin, Trigger::Retry, Trigger::Reconcile][t as usize];
                    let force = force && trigger == Trigger::Admin;
                    if procs[i as usize].token.is_some() { continue; }
                    if force && before == Some(State::Fulfilled) { forced_claims += 1; }
                    (procs[i as usize].owner.clone(), Input::Claim { trigger, force, actor: None, created: None })
                }
                Op::Read(i, r) => {
                    let proc = &procs[i as usize];
                    // Also after a fulfillment was recorded: the rules must not make a second.
                    let Some(claim) = proc.token.clone() else { continue };
                    let status = if truth == 1 && r != 1 { "paid" } else { "unpaid" };
                    let input = match r {
                        2 => Input::FetchFailed { claim, error: "503".into(), permanent: false },
                        3 => Input::FetchFailed { claim, error: "404".into(), permanent: true },
                        _ => Input::Fetched { claim, fetched: fetched(status, "complete") },
                    };
                    (proc.owner.clone(), input)
                }
                Op::ClaimRead(i, t, force, r, event_meanwhile) => {
                    let trigger = [Trigger::Webhook, Trigger::LandingPage, Trigger::Admin, Trigger::Retry, Trigger::Reconcile][t as usize];
                    let force = force && trigger == Trigger::Admin;
                    if procs[i as usize].token.is_some() { continue; }
                    if force && before == Some(State::Fulfilled) { forced_claims += 1; }
                    let status = if truth == 1 && r != 1 { "paid" } else { "unpaid" };
                    let read = match r {
                        2 => Read::Failed { error: "503".into(), permanent: false },
                        3 => Read::Failed { error: "404".into(), permanent: true },
                        _ => Read::Fetched(Box::new(fetched(status, "complete"))),
                    };
                    let version = session.as_ref().map_or(0, |s| s.rec.version);
                    let seen_version = if event_meanwhile { version.wrapping_sub(1) } else { version };
                    (procs[i as usize].owner.clone(), Input::ClaimAndRecord { trigger, force, actor: None, created: None, seen_version, read })
                }
                Op::Callback(i, ok) => {
                    let proc = &procs[i as usize];
                    let (Some(claim), Some(fid)) = (proc.token.clone(), proc.pending.clone()) else { continue };
                    let input = if ok {
                        Input::CallbackDelivered { claim, fulfillment_id: fid, attempt: None }
                    } else {
                        Input::CallbackFailed { claim, fulfillment_id: fid, attempt: None, error: "502".into(), permanent: false }
                    };
                    (proc.owner.clone(), input)
                }
                Op::Restart => {
                    boots += 1;
                    procs = [Proc { owner: format!("boot_{boots}a"), ..Proc::default() }, Proc { owner: format!("boot_{boots}b"), ..Proc::default() }];
                    (procs[0].owner.clone(), Input::TakeOver)
                }
                Op::Wait(ms) => { now += u64::from(ms); continue; }
                Op::Reconcile => (procs[0].owner.clone(), Input::Reconcile { quiet_ms: 60_000 }),
                Op::RunJob(i) => {
                    let due_now = queue.is_some_and(|due| due <= now);
                    if !due_now || procs[i as usize].token.is_some() { continue; }
                    (procs[i as usize].owner.clone(), Input::Claim { trigger: Trigger::Retry, force: false, actor: None, created: None })
                }
            };
            let running_job = matches!(op, Op::RunJob(_)).then_some(queue).flatten();
            let e = Env { now, entropy: 0, policy: &p, owner: &owner, key: &KEY, job_queued: queue.is_some() };
            let result = step(ID, session.clone(), input.clone(), &e);
            if let Some(s) = result.session { session = Some(s); }
            for effect in &result.effects {
                match effect {
                    Effect::ScheduleFulfill { due, earliest, .. }
                        if !(*earliest && queue.is_some_and(|q| q <= *due)) =>
                    {
                        queue = Some(*due);
                    }
                    Effect::CancelFulfill => queue = None,
                    _ => {}
                }
            }
            // The worker: a job whose due time the attempt did not move is done.
            if running_job.is_some() && queue == running_job {
                queue = None;
            }
            let i = procs.iter().position(|pr| pr.owner == owner).unwrap_or(0);
            match &result.reply {
                Reply::Claimed { token, pending, .. } => { procs[i].token = Some(token.clone()); procs[i].pending = pending.clone(); }
                Reply::Recorded { fulfillment_id, delivered } => {
                    if *delivered { procs[i].token = None; } else { procs[i].pending = Some(fulfillment_id.clone()); }
                }
                Reply::Done(_) | Reply::Overtaken(_) if !matches!(input, Input::Event { .. } | Input::TakeOver | Input::Reconcile { .. }) => {
                    procs[i].token = None;
                    procs[i].pending = None;
                }
                _ => {}
            }
            let Some(s) = &session else { continue };
            let recorded = &s.detail.fulfillments;
            // At most one fulfillment unless forced; forced ones only after a forced claim.
            let forced = recorded.iter().filter(|f| f.forced).count();
            prop_assert!(recorded.len() - forced <= 1, "{recorded:?}");
            prop_assert!(forced <= forced_claims, "{recorded:?}");
            // Ids follow the sequence: never repeated, never random.
            for (n, f) in recorded.iter().enumerate() {
                prop_assert_eq!(&f.id, &ids::fulfillment_id(&KEY, ID, n as u32));
            }
            // Only a read that says paid records a fulfillment.
            if recorded.len() > fulfillments_before {
                let paid_read = matches!(&input, Input::Fetched { fetched, .. } if fetched.snapshot.is_payable())
                    || matches!(&input, Input::ClaimAndRecord { read: Read::Fetched(fetched), .. } if fetched.snapshot.is_payable());
                prop_assert!(paid_read, "{input:?}");
            }
            // A fulfilled session leaves `fulfilled` only by force.
            if before == Some(State::Fulfilled) && s.rec.state != State::Fulfilled {
                prop_assert!(matches!(input, Input::Claim { force: true, .. } | Input::ClaimAndRecord { force: true, .. }), "{input:?}");
            }
            // The newest event wins: an attempt's result never undoes a failed payment.
            if before == Some(State::PaymentFailed) && matches!(input, Input::Fetched { .. } | Input::FetchFailed { .. } | Input::CallbackDelivered { .. } | Input::CallbackFailed { .. } | Input::ClaimAndRecord { trigger: Trigger::Webhook | Trigger::LandingPage | Trigger::Retry | Trigger::Reconcile, .. }) {
                prop_assert_eq!(s.rec.state, State::PaymentFailed);
            }
            // Never stuck: a session that is to be fulfilled, or retried, has
            // its job queued (a live lease's holder also has its recovery point).
            if matches!(s.rec.state, State::Fulfilling | State::Retrying) {
                prop_assert!(queue.is_some(), "{:?} without a queued job after {op:?}", s.rec.state);
            }
            // One lease at a time, held by a live process or none.
            if let Some(lease) = &s.rec.lease {
                prop_assert_eq!(s.rec.state, State::Fulfilling);
                prop_assert!(lease.seq == s.rec.claims);
            }
        }
    }
}
