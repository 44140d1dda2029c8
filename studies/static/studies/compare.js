// Filter the list of studies to compare as you type.
(function () {
  "use strict";
  document.querySelectorAll("input.js-filter").forEach((input) => {
    const list = document.querySelector(input.dataset.filterTarget);
    input.addEventListener("input", () => {
      const text = input.value.trim().toLowerCase();
      list.querySelectorAll("[data-name]").forEach((item) => {
        item.hidden = text !== "" && !item.dataset.name.includes(text);
      });
    });
  });
})();
