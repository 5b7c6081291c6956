// fulfilld dashboard: progressive enhancement only; every page works without it.
"use strict";
// Ask once more before a form marked data-confirm is sent (the force re-fulfill).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement && form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
// Disable a submit button once pressed, so a double click sends one request.
document.addEventListener("submit", (event) => {
  if (event.defaultPrevented) return;
  const button = event.target.querySelector("button[type=submit]");
  if (button) setTimeout(() => { button.disabled = true; }, 0);
});
