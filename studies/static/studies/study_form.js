// The new-study form: objectives, the search-space rows and option hints.
// Without JavaScript the form still works: "Add parameter" posts the form back
// with one more row, and every input is visible.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  const form = document.getElementById("study-form");
  if (!form) return;

  // Directions: one select per objective.
  const directions = document.getElementById("directions");
  const addDirection = document.getElementById("add-direction");
  function relabelDirections() {
    directions.querySelectorAll(".direction-row").forEach((row, i) => {
      row.querySelector(".direction-label").textContent = "Objective " + (i + 1);
      row.querySelector("select").setAttribute("aria-label", "Direction of objective " + (i + 1));
    });
  }
  if (directions && addDirection) {
    addDirection.addEventListener("click", () => {
      const rows = directions.querySelectorAll(".direction-row");
      const copy = rows[rows.length - 1].cloneNode(true);
      copy.querySelector("select").value = "minimize";
      directions.appendChild(copy);
      relabelDirections();
    });
    directions.addEventListener("click", (event) => {
      const button = event.target.closest(".js-remove-direction");
      if (!button || directions.querySelectorAll(".direction-row").length < 2) return;
      button.closest(".direction-row").remove();
      relabelDirections();
    });
  }

  // Search space rows.
  const editor = document.getElementById("ss-editor");
  const template = document.getElementById("ss-empty-row");
  const total = form.querySelector('input[name="params-TOTAL_FORMS"]');
  const addParam = document.getElementById("add-param");

  function liveRows() {
    return Array.from(editor.querySelectorAll(".ss-row")).filter(
      (row) => !row.classList.contains("removed")
    );
  }

  // "Only when" offers the categorical and int parameters declared above the row.
  function refreshConditions() {
    const earlier = [];
    liveRows().forEach((row) => {
      const select = row.querySelector(".ss-when-select");
      const current = select.value || select.dataset.value || "";
      select.replaceChildren(new Option("always", ""));
      const names = earlier.slice();
      if (current && !names.includes(current)) names.push(current);
      names.forEach((name) => select.appendChild(new Option(name, name, false, name === current)));
      select.value = current;
      const name = row.querySelector(".ss-name-input").value.trim();
      const type = row.querySelector(".ss-type-select").value;
      if (name && type !== "float") earlier.push(name);
    });
  }

  if (editor && template && total) {
    addParam.addEventListener("click", (event) => {
      event.preventDefault();
      const index = Number(total.value);
      editor.insertAdjacentHTML("beforeend", template.innerHTML.replaceAll("__prefix__", index));
      total.value = index + 1;
      refreshConditions();
      const rows = editor.querySelectorAll(".ss-row");
      rows[rows.length - 1].querySelector(".ss-name-input").focus();
    });
    editor.addEventListener("change", (event) => {
      const row = event.target.closest(".ss-row");
      if (event.target.classList.contains("ss-type-select")) {
        row.dataset.type = event.target.value;
        refreshConditions();
      } else if (event.target.classList.contains("ss-delete")) {
        row.classList.toggle("removed", event.target.checked);
        refreshConditions();
      } else if (event.target.classList.contains("ss-when-select")) {
        event.target.dataset.value = event.target.value;
      }
    });
    editor.addEventListener("input", (event) => {
      if (event.target.classList.contains("ss-name-input")) refreshConditions();
    });
    refreshConditions();
  }

  // The options each sampler and pruner accepts, under its options field.
  [
    ["id_sampler", "sampler-hints", "sampler-help", "JSON object of keyword arguments. "],
    ["id_pruner", "pruner-hints", "pruner-help", "JSON object of keyword arguments. "],
    ["id_objective", "objective-hints", "objective-help", ""],
  ].forEach(([selectId, hintsId, helpId, prefix]) => {
    const select = document.getElementById(selectId);
    const hints = document.getElementById(hintsId);
    const help = document.getElementById(helpId);
    if (!select || !hints || !help) return;
    const table = JSON.parse(hints.textContent);
    const show = () => {
      help.textContent = prefix + (table[select.value] || "");
    };
    select.addEventListener("change", show);
    show();
  });
})();
