// Small helpers for the pages (no build step): reload a page while its jobs run.
"use strict";
(function () {
  const live = document.querySelector("[data-refresh]");
  if (live) setTimeout(() => location.reload(), Number(live.dataset.refresh) || 2000);
})();
