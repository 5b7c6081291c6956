// Writes a checkout.session.completed webhook body template for compare-gen, built from the
// peers' session_template.json (what their fake Stripe serves), pretty-printed like Stripe's
// (~3.4 KB): every NNNNNNNNNNNN becomes the request number, so each request is a new event
// and a new session.  node template.js SESSION_TEMPLATE.json paid|unpaid OUT
const [tplPath, status, out] = process.argv.slice(2);
const fs = require('fs');
const s = JSON.parse(fs.readFileSync(tplPath, 'utf8').split('__ID__').join('cs_test_cmp_NNNNNNNNNNNN'));
delete s.line_items; // webhook payloads never carry line items
s.payment_status = status;
s.payment_intent = 'pi_cmp_NNNNNNNNNNNN';
const event = {
  id: 'evt_cmp_NNNNNNNNNNNN', object: 'event', api_version: '2026-10-28.endive',
  created: Math.floor(Date.now() / 1000), data: { object: s }, livemode: false,
  pending_webhooks: 1, request: { id: null, idempotency_key: null }, type: 'checkout.session.completed',
};
fs.writeFileSync(out, JSON.stringify(event, null, 2));
