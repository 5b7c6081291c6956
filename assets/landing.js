// fulfilld's customer pages: a page that waits for news (payment processing,
// order being finished) asks /after-checkout/status whether there is any, and
// reloads only when there is. Without JavaScript the page's "Check now" link
// does the same by hand. The server re-checks with Stripe at most once a
// minute per session, however many tabs poll.
"use strict";
(() => {
  const poll = document.getElementById("poll");
  if (!poll) return;
  const shown = poll.dataset.view;
  let wait = Number(poll.dataset.pollMs) || 15000;
  const url = location.pathname.replace(/\/$/, "") + "/status" + location.search;
  // Stop asking after an hour; the link stays.
  const until = Date.now() + 60 * 60 * 1000;
  const ask = async () => {
    if (Date.now() > until) return;
    try {
      const answer = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
      if (answer.ok) {
        const status = await answer.json();
        if (status.view && status.view !== shown) {
          location.reload();
          return;
        }
      } else if (answer.status === 400 || answer.status === 404) {
        // A final answer: show its page (which does not poll).
        location.reload();
        return;
      } else {
        wait = Math.min(wait * 2, 60000);
      }
    } catch (_) {
      wait = Math.min(wait * 2, 60000);
    }
    setTimeout(ask, wait);
  };
  setTimeout(ask, wait);
})();
