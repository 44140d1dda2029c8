// The study page: charts load lazily (one request each, when scrolled into
// view) and the page polls a small JSON view; when the trial-count signature
// changes it refreshes the trials table and the charts already shown, in place.
(function () {
  "use strict";
  const page = document.getElementById("study-page");
  if (!page) return;

  let signature = page.dataset.signature;
  let active = page.dataset.active === "1";
  const statusUrl = page.dataset.statusUrl;
  const trialsUrl = page.dataset.trialsUrl;
  const trialUrl = (id) => page.dataset.trialUrl.replace(/0\/$/, id + "/");
  const plotConfig = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  };
  const MIN_CHART_REFRESH_MS = 4000;

  // Charts

  const charts = new Map(); // element -> {visible, key, loading, again, lastLoad, timer}

  function chartParams(el) {
    const params = new URLSearchParams();
    const objective = document.getElementById("chart-objective");
    if (objective && el.dataset.objectiveAware) params.set("objective", objective.value);
    el.closest(".chart-card").querySelectorAll("[data-option]").forEach((select) => {
      params.set(select.dataset.option, select.value);
    });
    params.set("v", signature);
    return params.toString();
  }

  function showMessage(el, text, isError) {
    if (el.classList.contains("js-plotly-plot")) Plotly.purge(el);
    el.replaceChildren();
    const box = document.createElement("div");
    box.className = "chart-empty" + (isError ? " chart-error" : "");
    box.textContent = text;
    el.appendChild(box);
  }

  function render(el, body) {
    const note = el.parentElement.querySelector(".chart-note");
    if (note) note.textContent = body.note || "";
    if (body.empty) {
      showMessage(el, body.empty, false);
      return;
    }
    el.querySelectorAll(".chart-placeholder, .chart-empty").forEach((node) => node.remove());
    const figure = body.figure;
    const layout = Object.assign({}, figure.layout, { autosize: true });
    Plotly.react(el, figure.data, layout, plotConfig).then(() => {
      if (body.clickable && !el.dataset.clickBound) {
        el.dataset.clickBound = "1";
        el.on("plotly_click", (event) => {
          let id = event.points[0] && event.points[0].customdata;
          if (Array.isArray(id)) id = id[0];
          if (Number.isInteger(id)) window.location.href = trialUrl(id);
        });
      }
    });
  }

  async function loadChart(el) {
    const state = charts.get(el);
    const key = chartParams(el);
    if (state.key === key) return;
    if (state.loading) {
      state.again = true;
      return;
    }
    state.loading = true;
    try {
      const response = await fetch(el.dataset.chartUrl + "?" + key, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      render(el, body);
      state.key = key;
    } catch (error) {
      showMessage(el, "This chart could not be loaded: " + error.message, true);
    } finally {
      state.loading = false;
      state.lastLoad = Date.now();
      if (state.again) {
        state.again = false;
        loadChart(el);
      }
    }
  }

  // Reload a shown chart after new trials, at most every few seconds each.
  function refreshChart(el) {
    const state = charts.get(el);
    if (!state.visible || state.timer) return;
    const wait = Math.max(0, (state.lastLoad || 0) + MIN_CHART_REFRESH_MS - Date.now());
    state.timer = setTimeout(() => {
      state.timer = null;
      loadChart(el);
    }, wait);
  }

  const observer = new IntersectionObserver(
    (entries) => {
      entries.forEach((entry) => {
        if (!entry.isIntersecting) return;
        const state = charts.get(entry.target);
        state.visible = true;
        observer.unobserve(entry.target);
        loadChart(entry.target);
      });
    },
    { rootMargin: "200px" }
  );

  document.querySelectorAll(".chart[data-chart-url]").forEach((el) => {
    charts.set(el, { visible: false });
    observer.observe(el);
  });

  const objective = document.getElementById("chart-objective");
  if (objective) {
    objective.addEventListener("change", () => {
      charts.forEach((state, el) => {
        if (state.visible && el.dataset.objectiveAware) loadChart(el);
      });
    });
  }
  document.querySelectorAll(".chart-card [data-option]").forEach((select) => {
    select.addEventListener("change", () => {
      const el = select.closest(".chart-card").querySelector(".chart");
      if (charts.get(el).visible) loadChart(el);
    });
  });

  // Trials table: sorting, filtering and paging swap the table in place.

  const trialsSection = document.getElementById("trials");
  let tableQuery = window.location.search.replace(/^\?/, "");

  async function refreshTable(query) {
    if (query !== undefined) tableQuery = query;
    const response = await fetch(trialsUrl + (tableQuery ? "?" + tableQuery : ""), {
      credentials: "same-origin",
    });
    if (response.ok) trialsSection.innerHTML = await response.text();
  }

  trialsSection.addEventListener("click", (event) => {
    const link = event.target.closest("a.js-table-link");
    if (!link) return;
    event.preventDefault();
    const url = new URL(link.href);
    refreshTable(url.search.replace(/^\?/, ""));
    window.history.replaceState(null, "", url.pathname + url.search + "#trials");
  });

  // Jobs: cancel without leaving the page.

  const jobsSection = document.getElementById("jobs");
  jobsSection.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.js-cancel");
    if (!form) return;
    event.preventDefault();
    if (!window.confirm("Cancel this job? Trials already running finish first.")) return;
    form.querySelector("button").disabled = true;
    await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    poll();
  });

  // Polling: every 2 s while something runs and the tab is visible, slower otherwise.

  let timer = null;
  const shown = { jobs: null, summary: null };

  function interval() {
    const visible = document.visibilityState === "visible";
    if (active) return visible ? 2000 : 15000;
    return visible ? 10000 : 60000;
  }

  function replaceSection(id, html) {
    if (shown[id] === html) return;
    shown[id] = html;
    document.getElementById(id).innerHTML = html;
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const response = await fetch(statusUrl, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const status = await response.json();
        active = status.active;
        replaceSection("jobs", status.jobs_html);
        replaceSection("summary", status.summary_html);
        if (status.signature !== signature) {
          signature = status.signature;
          page.dataset.signature = signature;
          refreshTable();
          charts.forEach((state, el) => refreshChart(el));
        }
      }
    } catch (error) {
      // The server may be restarting: try again at the next tick.
    }
    timer = setTimeout(poll, interval());
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      poll();
    } else {
      clearTimeout(timer);
      timer = setTimeout(poll, interval());
    }
  });
  timer = setTimeout(poll, active ? 1000 : interval());
})();
