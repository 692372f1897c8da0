// Live updates without a framework: an element with data-poll="URL" has its content replaced by
// the HTML at URL every data-every milliseconds, until that HTML contains data-final="true".
"use strict";

function startPolling(element) {
  const url = element.dataset.poll;
  const every = Number(element.dataset.every || 2000);
  const stamp = document.createElement("p");
  stamp.className = "live-stamp";
  element.after(stamp);

  async function tick() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (response.redirected || response.status === 401) { window.location.reload(); return; }
      if (response.ok) {
        element.innerHTML = await response.text();
        stamp.textContent = "updated " + new Date().toLocaleTimeString();
        const marker = element.querySelector("[data-final]");
        if (marker && marker.dataset.final === "true") { stamp.textContent += " · final"; return; }
      }
    } catch (error) {
      stamp.textContent = "server unreachable, retrying…";
    }
    window.setTimeout(tick, every);
  }
  window.setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach(startPolling);
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
});
