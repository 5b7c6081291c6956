//! The customer's pages in their language: English, German, French and
//! Spanish, picked from the Checkout Session's `locale` (what the customer
//! saw at checkout) or else the browser's `Accept-Language`. A small
//! catalogue of fixed texts, one struct per language, so a missing
//! translation is a compile error, not a blank.

/// A language the customer pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
    Fr,
    Es,
}

impl Lang {
    /// `de`, `de-AT`, `fr-CA`… by their primary tag; None for the rest.
    fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Some(match primary.as_str() {
            "en" => Lang::En,
            "de" => Lang::De,
            "fr" => Lang::Fr,
            "es" => Lang::Es,
            _ => return None,
        })
    }

    /// The session's `locale` when it names a language spoken here, else
    /// the first of `Accept-Language` that is (by weight), else English.
    pub fn pick(locale: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(l) = locale.and_then(Lang::from_tag) {
            return l;
        }
        let mut offered: Vec<(f32, Lang)> = accept_language
            .unwrap_or_default()
            .split(',')
            .take(20)
            .filter_map(|part| {
                let mut bits = part.split(';');
                let lang = Lang::from_tag(bits.next()?)?;
                let q = bits
                    .find_map(|b| b.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, lang))
            })
            .collect();
        // Stable: among equal weights the first listed wins.
        offered.sort_by(|a, b| b.0.total_cmp(&a.0));
        offered.first().map_or(Lang::En, |(_, l)| *l)
    }

    /// The `lang` attribute of the page.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Fr => "fr",
            Lang::Es => "es",
        }
    }

    /// The texts of the customer's emails in this language.
    pub fn mail(self) -> &'static MailWords {
        match self {
            Lang::En => &EN_MAIL,
            Lang::De => &DE_MAIL,
            Lang::Fr => &FR_MAIL,
            Lang::Es => &ES_MAIL,
        }
    }

    pub fn words(self) -> &'static Words {
        match self {
            Lang::En => &EN,
            Lang::De => &DE,
            Lang::Fr => &FR,
            Lang::Es => &ES,
        }
    }
}

/// Every fixed text of the customer pages. `*_pre` / `*_post` surround a
/// value (an amount, a masked email) the page puts between them.
pub struct Words {
    pub processing_title: &'static str,
    pub processing_badge: &'static str,
    pub processing_heading: &'static str,
    pub processing_text: &'static str,
    pub amount: &'static str,
    pub email_when_clears_pre: &'static str,
    pub email_when_clears_post: &'static str,
    pub close_page: &'static str,
    pub no_email_when_clears: &'static str,
    pub progress_title: &'static str,
    pub progress_badge: &'static str,
    pub progress_heading: &'static str,
    pub progress_text: &'static str,
    pub attention_title: &'static str,
    pub attention_badge: &'static str,
    pub attention_heading: &'static str,
    pub attention_text: &'static str,
    pub failed_title: &'static str,
    pub failed_heading: &'static str,
    pub failed_pre: &'static str,
    pub failed_of: &'static str,
    pub failed_post: &'static str,
    pub failed_next: &'static str,
    pub expired_title: &'static str,
    pub expired_badge: &'static str,
    pub expired_heading: &'static str,
    pub expired_text: &'static str,
    pub incomplete_title: &'static str,
    pub incomplete_heading: &'static str,
    pub incomplete_text: &'static str,
    pub setup_title: &'static str,
    pub setup_badge: &'static str,
    pub setup_heading: &'static str,
    pub setup_text: &'static str,
    pub not_found_title: &'static str,
    pub not_found_heading: &'static str,
    pub not_found_text: &'static str,
    pub invalid_title: &'static str,
    pub invalid_heading: &'static str,
    pub invalid_text: &'static str,
    pub unavailable_title: &'static str,
    pub unavailable_heading: &'static str,
    pub unavailable_text: &'static str,
    pub receipt_title: &'static str,
    pub paid_badge: &'static str,
    pub confirmation_pre: &'static str,
    pub item: &'static str,
    pub qty: &'static str,
    pub line_amount: &'static str,
    pub subtotal: &'static str,
    pub total: &'static str,
    pub delivery: &'static str,
    pub reference: &'static str,
    pub updates_itself: &'static str,
    pub check_now: &'static str,
    pub questions_pre: &'static str,
    pub back_to: &'static str,
    pub the_shop: &'static str,
}

pub const EN: Words = Words {
    processing_title: "Payment processing",
    processing_badge: "Payment processing",
    processing_heading: "Thanks, your order is in",
    processing_text: "Your payment is still being processed by your bank. This can take a few business days for bank debits.",
    amount: "Amount: ",
    email_when_clears_pre: "We will email ",
    email_when_clears_post: " as soon as it clears and your order is on its way.",
    close_page: "You can close this page.",
    no_email_when_clears: "Your order goes on its way as soon as the payment clears. Keep this page's address: it shows the outcome when your bank answers.",
    progress_title: "Finishing your order",
    progress_badge: "Processing",
    progress_heading: "Thanks! We are finishing your order",
    progress_text: "Your payment went through and we are preparing your order.",
    attention_title: "Thanks for your order",
    attention_badge: "Received",
    attention_heading: "Thanks! Your order is received",
    attention_text: "Your payment is safe. Finishing your order is taking longer than usual; we are on it.",
    failed_title: "Payment failed",
    failed_heading: "Your payment did not go through",
    failed_pre: "Your bank reported that the payment",
    failed_of: " of ",
    failed_post: " failed, so your order has not been placed and you have not been charged.",
    failed_next: "Please try again with another payment method, or contact us if you think this is a mistake.",
    expired_title: "Checkout expired",
    expired_badge: "Expired",
    expired_heading: "This checkout has expired",
    expired_text: "No payment was taken. Please start your order again.",
    incomplete_title: "Checkout not completed",
    incomplete_heading: "This checkout is not complete",
    incomplete_text: "No payment has been made yet. Please return to the checkout page to finish your order.",
    setup_title: "Payment details saved",
    setup_badge: "Saved",
    setup_heading: "Your payment details are saved",
    setup_text: "Nothing was charged. They will be used for future payments you agree to.",
    not_found_title: "Order not found",
    not_found_heading: "We could not find that order",
    not_found_text: "The link may be incomplete. If you just paid, please use the link from your confirmation email or contact us.",
    invalid_title: "Invalid link",
    invalid_heading: "This link is not valid",
    invalid_text: "The order reference in the address is missing or malformed.",
    unavailable_title: "Please try again",
    unavailable_heading: "We could not load your order just now",
    unavailable_text: "If you have paid, your payment is safe and your order will be processed. This page will try again shortly.",
    receipt_title: "Thank you for your order",
    paid_badge: "Paid",
    confirmation_pre: "A confirmation goes to ",
    item: "Item",
    qty: "Qty",
    line_amount: "Amount",
    subtotal: "Subtotal",
    total: "Total",
    delivery: "Delivery details",
    reference: "Order reference: ",
    updates_itself: "This page updates by itself. ",
    check_now: "Check now",
    questions_pre: "Questions? Write to ",
    back_to: "← Back to ",
    the_shop: "the shop",
};

pub const DE: Words = Words {
    processing_title: "Zahlung in Bearbeitung",
    processing_badge: "Zahlung in Bearbeitung",
    processing_heading: "Danke, Ihre Bestellung ist eingegangen",
    processing_text: "Ihre Bank bearbeitet die Zahlung noch. Bei Lastschriften kann das einige Werktage dauern.",
    amount: "Betrag: ",
    email_when_clears_pre: "Wir schreiben an ",
    email_when_clears_post: ", sobald die Zahlung eingegangen ist und Ihre Bestellung unterwegs ist.",
    close_page: "Sie können diese Seite schließen.",
    no_email_when_clears: "Ihre Bestellung geht auf den Weg, sobald die Zahlung eingegangen ist. Behalten Sie die Adresse dieser Seite: Sie zeigt das Ergebnis, sobald Ihre Bank antwortet.",
    progress_title: "Ihre Bestellung wird abgeschlossen",
    progress_badge: "In Bearbeitung",
    progress_heading: "Danke! Wir schließen Ihre Bestellung ab",
    progress_text: "Ihre Zahlung ist eingegangen, und wir bereiten Ihre Bestellung vor.",
    attention_title: "Danke für Ihre Bestellung",
    attention_badge: "Eingegangen",
    attention_heading: "Danke! Ihre Bestellung ist eingegangen",
    attention_text: "Ihre Zahlung ist sicher. Der Abschluss Ihrer Bestellung dauert länger als üblich; wir kümmern uns darum.",
    failed_title: "Zahlung fehlgeschlagen",
    failed_heading: "Ihre Zahlung ist nicht durchgegangen",
    failed_pre: "Ihre Bank hat gemeldet, dass die Zahlung",
    failed_of: " über ",
    failed_post: " fehlgeschlagen ist. Ihre Bestellung wurde daher nicht aufgegeben, und Ihnen wurde nichts berechnet.",
    failed_next: "Bitte versuchen Sie es mit einer anderen Zahlungsart erneut, oder schreiben Sie uns, wenn Sie einen Fehler vermuten.",
    expired_title: "Bezahlvorgang abgelaufen",
    expired_badge: "Abgelaufen",
    expired_heading: "Dieser Bezahlvorgang ist abgelaufen",
    expired_text: "Es wurde keine Zahlung eingezogen. Bitte beginnen Sie Ihre Bestellung erneut.",
    incomplete_title: "Bezahlvorgang nicht abgeschlossen",
    incomplete_heading: "Dieser Bezahlvorgang ist nicht abgeschlossen",
    incomplete_text: "Es wurde noch nichts bezahlt. Bitte kehren Sie zur Bezahlseite zurück, um Ihre Bestellung abzuschließen.",
    setup_title: "Zahlungsdaten gespeichert",
    setup_badge: "Gespeichert",
    setup_heading: "Ihre Zahlungsdaten sind gespeichert",
    setup_text: "Es wurde nichts berechnet. Sie werden für künftige Zahlungen verwendet, denen Sie zustimmen.",
    not_found_title: "Bestellung nicht gefunden",
    not_found_heading: "Wir konnten diese Bestellung nicht finden",
    not_found_text: "Der Link ist vielleicht unvollständig. Wenn Sie gerade bezahlt haben, nutzen Sie bitte den Link aus Ihrer Bestätigung oder schreiben Sie uns.",
    invalid_title: "Ungültiger Link",
    invalid_heading: "Dieser Link ist nicht gültig",
    invalid_text: "Die Bestellnummer in der Adresse fehlt oder ist fehlerhaft.",
    unavailable_title: "Bitte versuchen Sie es erneut",
    unavailable_heading: "Wir konnten Ihre Bestellung gerade nicht laden",
    unavailable_text: "Wenn Sie bezahlt haben, ist Ihre Zahlung sicher und Ihre Bestellung wird bearbeitet. Diese Seite versucht es gleich erneut.",
    receipt_title: "Danke für Ihre Bestellung",
    paid_badge: "Bezahlt",
    confirmation_pre: "Eine Bestätigung geht an ",
    item: "Artikel",
    qty: "Menge",
    line_amount: "Betrag",
    subtotal: "Zwischensumme",
    total: "Gesamt",
    delivery: "Lieferadresse",
    reference: "Bestellnummer: ",
    updates_itself: "Diese Seite aktualisiert sich selbst. ",
    check_now: "Jetzt prüfen",
    questions_pre: "Fragen? Schreiben Sie an ",
    back_to: "← Zurück zu ",
    the_shop: "dem Shop",
};

pub const FR: Words = Words {
    processing_title: "Paiement en cours",
    processing_badge: "Paiement en cours",
    processing_heading: "Merci, votre commande est enregistrée",
    processing_text: "Votre banque traite encore le paiement. Pour un prélèvement, cela peut prendre quelques jours ouvrés.",
    amount: "Montant : ",
    email_when_clears_pre: "Nous écrirons à ",
    email_when_clears_post: " dès que le paiement sera reçu et votre commande en route.",
    close_page: "Vous pouvez fermer cette page.",
    no_email_when_clears: "Votre commande partira dès que le paiement sera reçu. Gardez l'adresse de cette page : elle affiche le résultat dès que votre banque répond.",
    progress_title: "Finalisation de votre commande",
    progress_badge: "En cours",
    progress_heading: "Merci ! Nous finalisons votre commande",
    progress_text: "Votre paiement est passé et nous préparons votre commande.",
    attention_title: "Merci pour votre commande",
    attention_badge: "Reçue",
    attention_heading: "Merci ! Votre commande est reçue",
    attention_text: "Votre paiement est en sécurité. La finalisation de votre commande prend plus de temps que d'habitude ; nous nous en occupons.",
    failed_title: "Échec du paiement",
    failed_heading: "Votre paiement n'est pas passé",
    failed_pre: "Votre banque a signalé que le paiement",
    failed_of: " de ",
    failed_post: " a échoué : votre commande n'a donc pas été passée et rien ne vous a été débité.",
    failed_next: "Veuillez réessayer avec un autre moyen de paiement, ou écrivez-nous si vous pensez qu'il s'agit d'une erreur.",
    expired_title: "Paiement expiré",
    expired_badge: "Expiré",
    expired_heading: "Ce paiement a expiré",
    expired_text: "Aucun paiement n'a été prélevé. Veuillez recommencer votre commande.",
    incomplete_title: "Paiement non terminé",
    incomplete_heading: "Ce paiement n'est pas terminé",
    incomplete_text: "Aucun paiement n'a encore été effectué. Veuillez revenir à la page de paiement pour terminer votre commande.",
    setup_title: "Moyen de paiement enregistré",
    setup_badge: "Enregistré",
    setup_heading: "Votre moyen de paiement est enregistré",
    setup_text: "Rien n'a été débité. Il servira aux paiements futurs que vous accepterez.",
    not_found_title: "Commande introuvable",
    not_found_heading: "Nous n'avons pas trouvé cette commande",
    not_found_text: "Le lien est peut-être incomplet. Si vous venez de payer, utilisez le lien de votre confirmation ou écrivez-nous.",
    invalid_title: "Lien non valide",
    invalid_heading: "Ce lien n'est pas valide",
    invalid_text: "La référence de commande dans l'adresse manque ou est mal formée.",
    unavailable_title: "Veuillez réessayer",
    unavailable_heading: "Nous n'avons pas pu charger votre commande pour l'instant",
    unavailable_text: "Si vous avez payé, votre paiement est en sécurité et votre commande sera traitée. Cette page réessaiera dans un instant.",
    receipt_title: "Merci pour votre commande",
    paid_badge: "Payé",
    confirmation_pre: "Une confirmation est envoyée à ",
    item: "Article",
    qty: "Qté",
    line_amount: "Montant",
    subtotal: "Sous-total",
    total: "Total",
    delivery: "Livraison",
    reference: "Référence de commande : ",
    updates_itself: "Cette page se met à jour toute seule. ",
    check_now: "Vérifier maintenant",
    questions_pre: "Des questions ? Écrivez à ",
    back_to: "← Retour à ",
    the_shop: "la boutique",
};

pub const ES: Words = Words {
    processing_title: "Pago en proceso",
    processing_badge: "Pago en proceso",
    processing_heading: "Gracias, hemos recibido tu pedido",
    processing_text: "Tu banco todavía está procesando el pago. En los adeudos bancarios puede tardar unos días hábiles.",
    amount: "Importe: ",
    email_when_clears_pre: "Escribiremos a ",
    email_when_clears_post: " en cuanto se confirme el pago y tu pedido esté en camino.",
    close_page: "Puedes cerrar esta página.",
    no_email_when_clears: "Tu pedido saldrá en cuanto se confirme el pago. Guarda la dirección de esta página: mostrará el resultado cuando responda tu banco.",
    progress_title: "Terminando tu pedido",
    progress_badge: "En proceso",
    progress_heading: "¡Gracias! Estamos terminando tu pedido",
    progress_text: "Tu pago se ha completado y estamos preparando tu pedido.",
    attention_title: "Gracias por tu pedido",
    attention_badge: "Recibido",
    attention_heading: "¡Gracias! Hemos recibido tu pedido",
    attention_text: "Tu pago está seguro. Terminar tu pedido está tardando más de lo habitual; nos estamos ocupando.",
    failed_title: "Pago fallido",
    failed_heading: "Tu pago no se ha completado",
    failed_pre: "Tu banco ha informado de que el pago",
    failed_of: " de ",
    failed_post: " ha fallado, así que tu pedido no se ha realizado y no se te ha cobrado nada.",
    failed_next: "Inténtalo de nuevo con otro método de pago o escríbenos si crees que es un error.",
    expired_title: "Pago caducado",
    expired_badge: "Caducado",
    expired_heading: "Este pago ha caducado",
    expired_text: "No se ha cobrado nada. Vuelve a empezar tu pedido.",
    incomplete_title: "Pago sin terminar",
    incomplete_heading: "Este pago no se ha terminado",
    incomplete_text: "Todavía no se ha pagado nada. Vuelve a la página de pago para terminar tu pedido.",
    setup_title: "Datos de pago guardados",
    setup_badge: "Guardado",
    setup_heading: "Tus datos de pago están guardados",
    setup_text: "No se ha cobrado nada. Se usarán para los pagos futuros que aceptes.",
    not_found_title: "Pedido no encontrado",
    not_found_heading: "No hemos encontrado ese pedido",
    not_found_text: "Puede que el enlace esté incompleto. Si acabas de pagar, usa el enlace de tu confirmación o escríbenos.",
    invalid_title: "Enlace no válido",
    invalid_heading: "Este enlace no es válido",
    invalid_text: "Falta la referencia del pedido en la dirección o está mal escrita.",
    unavailable_title: "Inténtalo de nuevo",
    unavailable_heading: "No hemos podido cargar tu pedido ahora mismo",
    unavailable_text: "Si has pagado, tu pago está seguro y tu pedido se procesará. Esta página lo volverá a intentar enseguida.",
    receipt_title: "Gracias por tu pedido",
    paid_badge: "Pagado",
    confirmation_pre: "Enviaremos una confirmación a ",
    item: "Artículo",
    qty: "Cant.",
    line_amount: "Importe",
    subtotal: "Subtotal",
    total: "Total",
    delivery: "Datos de envío",
    reference: "Referencia del pedido: ",
    updates_itself: "Esta página se actualiza sola. ",
    check_now: "Comprobar ahora",
    questions_pre: "¿Preguntas? Escribe a ",
    back_to: "← Volver a ",
    the_shop: "la tienda",
};

/// Countries by name: ISO 3166 code, then English, German, French, Spanish.
/// The countries Stripe's merchants most often ship to; any other code
/// is shown as it is.
const COUNTRIES: [(&str, [&str; 4]); 36] = [
    (
        "US",
        [
            "United States",
            "Vereinigte Staaten",
            "États-Unis",
            "Estados Unidos",
        ],
    ),
    ("CA", ["Canada", "Kanada", "Canada", "Canadá"]),
    (
        "GB",
        [
            "United Kingdom",
            "Vereinigtes Königreich",
            "Royaume-Uni",
            "Reino Unido",
        ],
    ),
    ("IE", ["Ireland", "Irland", "Irlande", "Irlanda"]),
    ("DE", ["Germany", "Deutschland", "Allemagne", "Alemania"]),
    ("AT", ["Austria", "Österreich", "Autriche", "Austria"]),
    ("CH", ["Switzerland", "Schweiz", "Suisse", "Suiza"]),
    ("FR", ["France", "Frankreich", "France", "Francia"]),
    ("BE", ["Belgium", "Belgien", "Belgique", "Bélgica"]),
    (
        "NL",
        ["Netherlands", "Niederlande", "Pays-Bas", "Países Bajos"],
    ),
    (
        "LU",
        ["Luxembourg", "Luxemburg", "Luxembourg", "Luxemburgo"],
    ),
    ("ES", ["Spain", "Spanien", "Espagne", "España"]),
    ("PT", ["Portugal", "Portugal", "Portugal", "Portugal"]),
    ("IT", ["Italy", "Italien", "Italie", "Italia"]),
    ("DK", ["Denmark", "Dänemark", "Danemark", "Dinamarca"]),
    ("SE", ["Sweden", "Schweden", "Suède", "Suecia"]),
    ("NO", ["Norway", "Norwegen", "Norvège", "Noruega"]),
    ("FI", ["Finland", "Finnland", "Finlande", "Finlandia"]),
    ("PL", ["Poland", "Polen", "Pologne", "Polonia"]),
    ("CZ", ["Czechia", "Tschechien", "Tchéquie", "Chequia"]),
    ("GR", ["Greece", "Griechenland", "Grèce", "Grecia"]),
    ("AU", ["Australia", "Australien", "Australie", "Australia"]),
    (
        "NZ",
        [
            "New Zealand",
            "Neuseeland",
            "Nouvelle-Zélande",
            "Nueva Zelanda",
        ],
    ),
    ("JP", ["Japan", "Japan", "Japon", "Japón"]),
    ("SG", ["Singapore", "Singapur", "Singapour", "Singapur"]),
    ("HK", ["Hong Kong", "Hongkong", "Hong Kong", "Hong Kong"]),
    ("IN", ["India", "Indien", "Inde", "India"]),
    ("MX", ["Mexico", "Mexiko", "Mexique", "México"]),
    ("BR", ["Brazil", "Brasilien", "Brésil", "Brasil"]),
    ("AR", ["Argentina", "Argentinien", "Argentine", "Argentina"]),
    ("CL", ["Chile", "Chile", "Chili", "Chile"]),
    ("CO", ["Colombia", "Kolumbien", "Colombie", "Colombia"]),
    ("MA", ["Morocco", "Marokko", "Maroc", "Marruecos"]),
    ("SN", ["Senegal", "Senegal", "Sénégal", "Senegal"]),
    (
        "ZA",
        ["South Africa", "Südafrika", "Afrique du Sud", "Sudáfrica"],
    ),
    (
        "AE",
        [
            "United Arab Emirates",
            "Vereinigte Arabische Emirate",
            "Émirats arabes unis",
            "Emiratos Árabes Unidos",
        ],
    ),
];

/// The customer emails' own texts (receipt, payment failed); the words
/// they share with the pages (headings, "Total", the order reference)
/// come from [`Words`]. `*_pre` / `*_post` surround an amount.
pub struct MailWords {
    pub hello: &'static str,
    pub failed_subject_pre: &'static str,
    pub failed_subject_post: &'static str,
    pub failed_pre: &'static str,
    pub failed_post: &'static str,
    pub pay_again_here: &'static str,
    pub pay_again: &'static str,
    pub copy_link: &'static str,
    pub place_again: &'static str,
    pub receipt_subject: &'static str,
    pub delivery_to: &'static str,
    pub your_order: &'static str,
    pub view_order: &'static str,
    /// Stands for the amount when the session has none.
    pub the_order: &'static str,
    /// Names the shop's link when `shop.name` is not set.
    pub shop: &'static str,
}

pub const EN_MAIL: MailWords = MailWords {
    hello: "Hello,",
    failed_subject_pre: "Your payment of ",
    failed_subject_post: " did not go through",
    failed_pre: "Your bank reported that your payment of ",
    failed_post: " did not go through, so your order has not been placed and you have not been charged.",
    pay_again_here: "You can pay again here: ",
    pay_again: "Pay again",
    copy_link: "Or copy this link: ",
    place_again: "Please place your order again with another payment method.",
    receipt_subject: "Your receipt: ",
    delivery_to: "Delivery to",
    your_order: "Your order: ",
    view_order: "View your order",
    the_order: "your order",
    shop: "The shop",
};

pub const DE_MAIL: MailWords = MailWords {
    hello: "Guten Tag,",
    failed_subject_pre: "Ihre Zahlung über ",
    failed_subject_post: " ist nicht durchgegangen",
    failed_pre: "Ihre Bank hat gemeldet, dass Ihre Zahlung über ",
    failed_post: " nicht durchgegangen ist. Ihre Bestellung wurde daher nicht aufgegeben, und Ihnen wurde nichts berechnet.",
    pay_again_here: "Hier können Sie erneut bezahlen: ",
    pay_again: "Erneut bezahlen",
    copy_link: "Oder kopieren Sie diesen Link: ",
    place_again: "Bitte geben Sie Ihre Bestellung mit einer anderen Zahlungsart erneut auf.",
    receipt_subject: "Ihre Zahlungsbestätigung: ",
    delivery_to: "Lieferung an",
    your_order: "Ihre Bestellung: ",
    view_order: "Bestellung ansehen",
    the_order: "Ihre Bestellung",
    shop: "Der Shop",
};

pub const FR_MAIL: MailWords = MailWords {
    hello: "Bonjour,",
    failed_subject_pre: "Votre paiement de ",
    failed_subject_post: " n'est pas passé",
    failed_pre: "Votre banque a signalé que votre paiement de ",
    failed_post: " n'est pas passé : votre commande n'a donc pas été passée et rien ne vous a été débité.",
    pay_again_here: "Vous pouvez payer à nouveau ici : ",
    pay_again: "Payer à nouveau",
    copy_link: "Ou copiez ce lien : ",
    place_again: "Veuillez repasser votre commande avec un autre moyen de paiement.",
    receipt_subject: "Votre reçu : ",
    delivery_to: "Livraison à",
    your_order: "Votre commande : ",
    view_order: "Voir votre commande",
    the_order: "votre commande",
    shop: "La boutique",
};

pub const ES_MAIL: MailWords = MailWords {
    hello: "Hola:",
    failed_subject_pre: "Tu pago de ",
    failed_subject_post: " no se ha completado",
    failed_pre: "Tu banco ha informado de que tu pago de ",
    failed_post: " no se ha completado, así que tu pedido no se ha realizado y no se te ha cobrado nada.",
    pay_again_here: "Puedes volver a pagar aquí: ",
    pay_again: "Pagar de nuevo",
    copy_link: "O copia este enlace: ",
    place_again: "Vuelve a hacer tu pedido con otro método de pago.",
    receipt_subject: "Tu recibo: ",
    delivery_to: "Entrega a",
    your_order: "Tu pedido: ",
    view_order: "Ver tu pedido",
    the_order: "tu pedido",
    shop: "La tienda",
};

/// A country's name in `lang` for its code (`DE`), if it is in the table.
pub fn country_name(lang: Lang, code: &str) -> Option<&'static str> {
    let i = match lang {
        Lang::En => 0,
        Lang::De => 1,
        Lang::Fr => 2,
        Lang::Es => 3,
    };
    COUNTRIES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, names)| names[i])
}

/// Postal lines for people: the last line, when it is a country code
/// (as Checkout gives it), becomes the country's name.
pub fn address_lines(lang: Lang, lines: &[String]) -> Vec<String> {
    let mut out = lines.to_vec();
    if let Some(last) = out.last_mut()
        && let Some(name) = country_name(lang, last)
    {
        *last = name.to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_named_in_the_pages_language() {
        let lines = vec![
            "1 rue de Rivoli".to_string(),
            "75001 Paris".into(),
            "FR".into(),
        ];
        assert_eq!(address_lines(Lang::De, &lines)[2], "Frankreich");
        assert_eq!(address_lines(Lang::En, &lines)[2], "France");
        let odd = vec!["Somewhere".to_string(), "XZ".into()];
        assert_eq!(
            address_lines(Lang::Es, &odd),
            odd,
            "an unknown code stays as it is"
        );
        assert_eq!(country_name(Lang::Es, "DE"), Some("Alemania"));
    }

    #[test]
    fn the_session_locale_wins_then_the_browser_then_english() {
        assert_eq!(Lang::pick(Some("de"), Some("fr")), Lang::De);
        assert_eq!(
            Lang::pick(Some("auto"), Some("fr-CA,fr;q=0.9,en;q=0.8")),
            Lang::Fr
        );
        assert_eq!(Lang::pick(Some("ja"), Some("ja, es;q=0.5")), Lang::Es);
        assert_eq!(Lang::pick(None, Some("en;q=0.3, de-AT;q=0.7")), Lang::De);
        assert_eq!(Lang::pick(None, Some("es;q=0, it")), Lang::En);
        assert_eq!(
            Lang::pick(None, Some("zh-CN")),
            Lang::En,
            "an unknown locale falls back to English"
        );
        assert_eq!(Lang::pick(None, None), Lang::En);
        assert_eq!(Lang::pick(Some("pt-BR"), Some("garbage;;q=x")), Lang::En);
    }
}
