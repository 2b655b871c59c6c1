// The overview's charts (Chart.js, vendored in this directory), from the figures the page carries as JSON.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("charts-data").textContent);
  const blue = "#2f6fed", green = "#16a34a", amber = "#d97706";
  const common = { animation: false, responsive: true, plugins: { legend: { display: false } } };
  new Chart(document.getElementById("chart-per-hour"), {
    type: "bar",
    data: { labels: data.per_hour.labels, datasets: [{ label: "calls", data: data.per_hour.values, backgroundColor: blue }] },
    options: { ...common, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  new Chart(document.getElementById("chart-outcomes"), {
    type: "bar",
    data: { labels: data.outcomes.labels, datasets: [{ label: "calls", data: data.outcomes.values, backgroundColor: green }] },
    options: { ...common, indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  new Chart(document.getElementById("chart-latency"), {
    type: "line",
    data: {
      labels: data.latency.labels,
      datasets: [
        { label: "median", data: data.latency.median, borderColor: blue, backgroundColor: blue, spanGaps: true },
        { label: "p95", data: data.latency.p95, borderColor: amber, backgroundColor: amber, spanGaps: true },
      ],
    },
    options: { ...common, plugins: { legend: { display: true } }, scales: { y: { beginAtZero: true } } },
  });
  new Chart(document.getElementById("chart-cost"), {
    type: "bar",
    data: { labels: data.cost_per_day.labels, datasets: [{ label: "USD", data: data.cost_per_day.values, backgroundColor: amber }] },
    options: { ...common, scales: { y: { beginAtZero: true } } },
  });
  document.body.dataset.chartsDrawn = "true";
})();
