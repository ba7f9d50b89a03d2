// gslb dashboard: draws the world map from static/world.js, then polls api/v1/status, and every second
// api/v1/map for the traffic map (countries filled with the colour of the site their clients get).
// Everything is built with DOM calls (textContent), never innerHTML, so zone data cannot inject markup.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const MAP_MS = 1000;
  // one colour per site, in the pool's order (colour-blind friendly Tableau 10)
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac"];
  const NO_ANSWER = "#555d69";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const WORLD = window.GSLB_WORLD || { width: 360, height: 142, latTop: 84, latBottom: -58, countries: [] };
  const map = document.getElementById("map");
  const tooltip = document.getElementById("tooltip");
  let siteLayer = null;
  let regionLayer = null;
  const countryPaths = [];  // {iso, name, path, title}
  let mapRows = {};  // ISO code -> rows of /api/v1/map for the selected pool (largest share first)
  let mapColours = {};  // site -> colour
  let selectedPool = null;  // "zone|pool"

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function project(lat, lon) {
    const y = WORLD.latTop - Math.max(Math.min(lat, WORLD.latTop), WORLD.latBottom);
    return [lon + 180, y];
  }

  function badge(state) {
    return el("span", { class: "badge " + state, "data-state": state }, state);
  }

  function fmtRtt(ms) {
    return ms === null || ms === undefined ? "" : (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + " ms";
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function clock(iso) {
    return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "";
  }

  function drawBase() {
    map.setAttribute("viewBox", `0 0 ${WORLD.width} ${WORLD.height}`);
    const grid = svg("g", { class: "graticule" });
    for (let lon = -150; lon < 180; lon += 30) {
      const [x] = project(0, lon);
      grid.append(svg("line", { x1: x, y1: 0, x2: x, y2: WORLD.height }));
    }
    for (let lat = -30; lat <= 60; lat += 30) {
      const [, y] = project(lat, 0);
      grid.append(svg("line", { x1: 0, y1: y, x2: WORLD.width, y2: y }));
    }
    map.append(grid);
    const land = svg("g", { class: "land" });
    for (const c of WORLD.countries) {
      const p = svg("path", { class: "country", d: c.d, "data-iso": c.iso || "" });
      const t = svg("title", {});
      t.textContent = c.name;
      p.append(t);
      p.addEventListener("mouseenter", (evt) => showCountryTooltip(evt, c));
      p.addEventListener("mousemove", moveTooltip);
      p.addEventListener("mouseleave", () => { tooltip.hidden = true; });
      countryPaths.push({ iso: c.iso || "", name: c.name, path: p, title: t });
      land.append(p);
    }
    map.append(land);
    regionLayer = svg("g", { class: "regions" });
    siteLayer = svg("g", { class: "sites" });
    map.append(regionLayer, siteLayer);
  }

  function showTooltip(evt, site) {
    tooltip.replaceChildren();
    tooltip.append(el("h3", {}, site.site, " ", el("span", { class: "muted" }, site.zone), " ", badge(site.state)));
    if (site.override) tooltip.append(el("div", {}, "override: ", el("b", {}, site.override)));
    if (site.pools && site.pools.length) tooltip.append(el("div", { class: "muted" }, "pools: " + site.pools.join(", ")));
    tooltip.append(el("div", { class: "mono muted" }, (site.addresses || []).join(" ")));
    const regions = Object.entries(site.regions || {});
    if (regions.length) {
      const table = el("table", {});
      for (const [name, r] of regions) {
        table.append(el("tr", {},
          el("td", {}, name), el("td", {}, badge(r.state)), el("td", {}, fmtRtt(r.rtt_ms)),
          el("td", {}, r.load !== null && r.load !== undefined ? "load " + r.load : ""),
          el("td", { class: r.error ? "err" : "muted" }, r.error || ago(r.checked_at))));
      }
      tooltip.append(table);
    } else {
      tooltip.append(el("div", { class: "muted" }, (site.checks || []).length ? "no fresh check result" : "no checks (always up)"));
    }
    tooltip.hidden = false;
    moveTooltip(evt);
  }

  function pct(share) {
    const percent = share * 100;
    return (percent > 0 && percent < 0.05 ? percent.toPrecision(2) : percent.toFixed(1)) + " %";
  }

  function sitesText(sites) {
    return sites.length ? sites.join(", ") : "no answer";
  }

  function showCountryTooltip(evt, c) {
    const rows = mapRows[c.iso];
    if (!rows) return;
    tooltip.replaceChildren();
    tooltip.append(el("h3", {}, c.name, " ", el("span", { class: "muted" }, c.iso + (rows[0].continent ? " · " + rows[0].continent : ""))));
    const table = el("table", {});
    for (const r of rows) {
      const site = r.sites[0];
      table.append(el("tr", {},
        el("td", {}, el("span", { class: "swatch", style: `background:${site ? mapColours[site] || NO_ANSWER : NO_ANSWER}` })),
        el("td", {}, sitesText(r.sites)), el("td", { class: "muted" }, pct(r.share))));
    }
    tooltip.append(table);
    tooltip.hidden = false;
    moveTooltip(evt);
  }

  function paintMap(data) {
    mapColours = {};
    (data.sites || []).forEach((site, i) => { mapColours[site] = PALETTE[i % PALETTE.length]; });
    mapRows = {};
    for (const r of data.countries || []) (mapRows[r.country] = mapRows[r.country] || []).push(r);
    for (const rows of Object.values(mapRows)) rows.sort((a, b) => b.share - a.share);
    let none = false;
    for (const c of countryPaths) {
      const rows = mapRows[c.iso];
      if (!rows) {
        c.path.removeAttribute("style");
        c.path.setAttribute("data-site", "");
        c.path.removeAttribute("data-sites");
        c.path.classList.remove("split");
        c.title.textContent = c.name;
        continue;
      }
      const site = rows[0].sites[0] || "";
      none = none || !site;
      const colour = site ? mapColours[site] || NO_ANSWER : NO_ANSWER;
      c.path.setAttribute("style", `fill:${colour}`);
      c.path.setAttribute("data-site", site);
      c.path.setAttribute("data-sites", rows[0].sites.join(","));
      c.path.setAttribute("data-fill", colour);
      c.path.classList.toggle("split", rows.length > 1);
      c.title.textContent = c.name + ": " + rows.map((r) => `${sitesText(r.sites)} ${pct(r.share)}`).join(", ");
    }
    const legend = document.getElementById("site-legend");
    legend.replaceChildren();
    for (const [site, colour] of Object.entries(mapColours)) {
      legend.append(el("li", { "data-site": site, "data-fill": colour }, el("span", { class: "swatch", style: `background:${colour}` }), site));
    }
    if (none) legend.append(el("li", {}, el("span", { class: "swatch", style: `background:${NO_ANSWER}` }), "no answer"));
    legend.append(el("li", { class: "muted" }, "dashed outline: split between answers"));
    document.body.setAttribute("data-map", `${data.zone}|${data.pool}`);
  }

  function fillPoolSelector(data) {
    const select = document.getElementById("map-pool");
    const keys = (data.pools || []).map((p) => `${p.zone}|${p.pool}`);
    const shown = [...select.options].map((o) => o.value);
    if (keys.join("\n") !== shown.join("\n")) {
      select.replaceChildren(...keys.map((k) => {
        const [zone, pool] = k.split("|");
        return el("option", { value: k }, `${pool} (${zone})`);
      }));
    }
    if (!keys.includes(selectedPool)) selectedPool = keys.length ? keys[0] : null;
    select.value = selectedPool || "";
  }

  let mapInFlight = false;  // the first map of a big database takes a while: one request at a time

  async function refreshMap() {
    if (!selectedPool || mapInFlight) return;
    const [zone, pool] = selectedPool.split("|");
    mapInFlight = true;
    try {
      const resp = await fetch(`api/v1/map?zone=${encodeURIComponent(zone)}&pool=${encodeURIComponent(pool)}`, { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      if (`${data.zone}|${data.pool}` === selectedPool) paintMap(data);
      document.getElementById("map-note").classList.remove("err");
    } catch (err) {
      const note = document.getElementById("map-note");
      note.textContent = "traffic map unavailable (" + err.message + ")";
      note.classList.add("err");
    } finally {
      mapInFlight = false;
    }
  }

  function moveTooltip(evt) {
    const box = map.parentElement.getBoundingClientRect();
    let x = evt.clientX - box.left + 14;
    const y = evt.clientY - box.top + 14;
    if (x + tooltip.offsetWidth > box.width) x = Math.max(0, evt.clientX - box.left - tooltip.offsetWidth - 14);
    tooltip.style.left = x + "px";
    tooltip.style.top = y + "px";
  }

  function drawSites(data) {
    siteLayer.replaceChildren();
    regionLayer.replaceChildren();
    for (const [name, r] of Object.entries(data.regions || {})) {
      if (!r.location) continue;
      const [x, y] = project(r.location[0], r.location[1]);
      const g = svg("g", { class: "region", "data-region": name });
      g.append(svg("rect", { x: x - 1.3, y: y - 1.3, width: 2.6, height: 2.6, transform: `rotate(45 ${x} ${y})` }));
      const t = svg("text", { x: x, y: y + 4.6, "text-anchor": "middle" });
      t.textContent = name;
      g.append(t);
      regionLayer.append(g);
    }
    // One label per place: sites of several zones at the same spot share it.
    const labelled = new Set();
    const placed = [];  // [x, y, side] of labels already drawn, to put a close neighbour's on the other side
    const sites = (data.sites || []).filter((s) => s.location);
    for (const s of sites) {
      const [x, y] = project(s.location[0], s.location[1]);
      const g = svg("g", { class: "site", "data-zone": s.zone, "data-site": s.site, "data-state": s.state });
      if (s.state === "down") g.append(svg("circle", { class: "pulse", cx: x, cy: y, r: 3.2 }));
      if (s.override) g.append(svg("circle", { class: "halo", cx: x, cy: y, r: 2.6 }));
      g.append(svg("circle", { class: "mark", cx: x, cy: y, r: 1.8 }));
      const key = s.site + "@" + x.toFixed(1) + "," + y.toFixed(1);
      if (!labelled.has(key)) {
        labelled.add(key);
        const near = placed.find(([px, py]) => Math.abs(px - x) < 9 && Math.abs(py - y) < 4);
        const left = near !== undefined && near[2] === "right";
        placed.push([x, y, left ? "left" : "right"]);
        const t = svg("text", left ? { x: x - 2.6, y: y + 1.2, "text-anchor": "end" } : { x: x + 2.6, y: y + 1.2 });
        t.textContent = s.site;
        g.append(t);
      }
      g.addEventListener("mouseenter", (evt) => showTooltip(evt, s));
      g.addEventListener("mousemove", moveTooltip);
      g.addEventListener("mouseleave", () => { tooltip.hidden = true; });
      siteLayer.append(g);
    }
    const counts = { up: 0, down: 0, drain: 0, unknown: 0 };
    for (const s of data.sites || []) counts[s.state] = (counts[s.state] || 0) + 1;
    const unplaced = (data.sites || []).length - sites.length;
    document.getElementById("summary").textContent =
      `${(data.sites || []).length} sites: ${counts.up} up, ${counts.down} down, ${counts.drain} drain, ${counts.unknown} unknown` +
      (unplaced ? ` (${unplaced} without a location are listed below only)` : "");
  }

  function drawSitesTable(data) {
    const regionNames = new Set();
    for (const s of data.sites || []) for (const r of Object.keys(s.regions || {})) regionNames.add(r);
    const regions = [...regionNames].sort();
    const head = el("tr", {}, el("th", {}, "zone"), el("th", {}, "site"), el("th", {}, "state"),
      el("th", {}, "override"), el("th", {}, "pools"), ...regions.map((r) => el("th", {}, r)), el("th", {}, "addresses"));
    document.querySelector("#sites thead").replaceChildren(head);
    const body = document.querySelector("#sites tbody");
    body.replaceChildren();
    for (const s of data.sites || []) {
      const cells = regions.map((name) => {
        const r = (s.regions || {})[name];
        if (!r) return el("td", { class: "muted" }, "–");
        return el("td", { class: "region-cell", title: r.checked_at || "" }, badge(r.state), fmtRtt(r.rtt_ms),
          r.load !== null && r.load !== undefined ? el("span", { class: "muted" }, " · load " + r.load) : null,
          r.error ? el("div", { class: "err" }, r.error) : null);
      });
      body.append(el("tr", { "data-zone": s.zone, "data-site": s.site, "data-state": s.state },
        el("td", { class: "muted" }, s.zone), el("td", {}, el("b", {}, s.site)), el("td", {}, badge(s.state)),
        el("td", {}, s.override || el("span", { class: "muted" }, "auto")),
        el("td", { class: "muted" }, (s.pools || []).join(", ")),
        ...cells,
        el("td", { class: "mono muted" }, (s.addresses || []).join(" "))));
    }
    if (!(data.sites || []).length) body.append(el("tr", {}, el("td", { class: "muted", colspan: 6 }, "no sites")));
  }

  function drawPools(data) {
    const body = document.querySelector("#pools tbody");
    body.replaceChildren();
    for (const p of data.pools || []) {
      const frac = p.total ? p.up / p.total : 0;
      const colour = p.up === p.total ? "var(--up)" : p.up === 0 ? "var(--down)" : "var(--drain)";
      const bar = el("span", { class: "bar" }, el("span", { style: `width:${Math.round(frac * 100)}%;background:${colour}` }));
      body.append(el("tr", { "data-zone": p.zone, "data-pool": p.pool, "data-up": p.up, "data-total": p.total },
        el("td", { class: "muted" }, p.zone), el("td", {}, el("b", {}, p.pool)), el("td", { class: "muted" }, p.policy),
        el("td", { class: "nowrap" }, bar, `${p.up}/${p.total}`)));
    }
    if (!(data.pools || []).length) body.append(el("tr", {}, el("td", { class: "muted", colspan: 4 }, "no pools")));
  }

  function drawChanges(data) {
    const list = document.getElementById("changes");
    list.replaceChildren();
    for (const c of data.changes || []) {
      list.append(el("li", { "data-zone": c.zone, "data-site": c.site },
        el("time", { datetime: c.time, title: c.time }, clock(c.time)),
        el("b", {}, c.site), " ", badge(c.old), " → ", badge(c.new), el("div", { class: "muted small" }, c.zone)));
    }
    if (!(data.changes || []).length) list.append(el("li", { class: "muted" }, "no changes yet"));
  }

  function drawZones(data) {
    const body = document.querySelector("#zones tbody");
    body.replaceChildren();
    for (const z of data.zones || []) {
      body.append(el("tr", { "data-zone": z.zone },
        el("td", {}, el("b", {}, z.zone || "")), el("td", { class: "mono" }, z.serial === null ? "" : z.serial),
        el("td", { class: "mono muted" }, z.file || ""), el("td", { class: "muted", title: z.loaded_at || "" }, ago(z.loaded_at)),
        el("td", { class: z.error ? "err" : "muted" }, z.error || "ok")));
    }
  }

  function drawHeader(data) {
    document.getElementById("region").textContent = data.region || "-";
    const b = data.state_backend || {};
    document.getElementById("backend-url").textContent = b.url || "-";
    const bs = document.getElementById("backend-state");
    bs.textContent = b.connected ? "connected" : "disconnected";
    bs.className = "pill " + (b.connected ? "ok" : "bad");
    const dns = document.getElementById("dns-state");
    dns.textContent = data.dns_ready === false ? "not serving" : "serving";
    dns.className = "pill " + (data.dns_ready === false ? "bad" : "ok");
  }

  function render(data) {
    drawHeader(data);
    const before = selectedPool;
    fillPoolSelector(data);
    if (selectedPool !== before) refreshMap();
    drawSites(data);
    drawSitesTable(data);
    drawPools(data);
    drawChanges(data);
    drawZones(data);
    document.body.setAttribute("data-loaded", "true");
  }

  async function refresh() {
    const conn = document.getElementById("conn");
    try {
      const resp = await fetch("api/v1/status", { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      conn.textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
      conn.className = "meta";
    } catch (err) {
      conn.textContent = "cannot reach the server (" + err.message + "); showing the last known state";
      conn.className = "meta bad";
    }
  }

  drawBase();
  document.getElementById("map-pool").addEventListener("change", (evt) => {
    selectedPool = evt.target.value;
    refreshMap();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(refreshMap, MAP_MS);
})();
