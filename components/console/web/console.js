// Downlink web console: plain script, no framework, no build step.
//
// Rules this file keeps (the page is served under a strict CSP):
// - no inline script or style: behaviour is attached here, styling lives in console.css;
// - every string that comes from the server or the user is put on the page with textContent /
//   setAttribute, never parsed as markup (no innerHTML anywhere);
// - the token lives in sessionStorage only and travels in the Authorization header of
//   same-origin fetch/XMLHttpRequest calls: never in a URL, a cookie or a log line.
"use strict";

(function () {
  const TOKEN_KEY = "downlink.token";
  const HISTORY_PAGE = 20;
  const POLL_ACTIVE_MS = 1000;
  const POLL_IDLE_MS = 10000;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    generation: 0, // bumped on sign-in/out so late answers of an old session are dropped
    dir: [], // current directory, as decoded segments
    listing: { cursors: [null], index: 0, entries: [], exists: true, loading: false },
    selected: new Map(), // full path -> {name, type}
    prepared: null, // {id, paths, name, size}
    uploads: [], // queue of {file, rel, item}
    uploading: false,
    downloads: new Map(), // id -> tracked download (active or just finished)
    pollTimer: 0,
    history: { cursors: [null], index: 0 },
  };

  // ---------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------

  /** An element with fixed attributes and optional text (never markup). */
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(id, text) {
    const node = typeof id === "string" ? $(id) : id;
    if (node) node.textContent = text || "";
  }

  function formatBytes(n) {
    if (n === null || n === undefined || !Number.isFinite(Number(n))) return "–";
    n = Number(n);
    if (n < 1024) return n + " B";
    const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (v < 100 ? v.toFixed(1) : v.toFixed(0)) + " " + units[i];
  }

  function formatExact(n) {
    return Number(n).toLocaleString("en-US") + " bytes";
  }

  function formatDuration(secs) {
    if (!Number.isFinite(secs) || secs < 0) return "";
    secs = Math.round(secs);
    if (secs < 60) return secs + " s";
    const m = Math.floor(secs / 60);
    const s = secs % 60;
    if (m < 60) return m + " min " + s + " s";
    const h = Math.floor(m / 60);
    return h + " h " + (m % 60) + " min";
  }

  function formatTime(unixSecs) {
    if (unixSecs === null || unixSecs === undefined) return "";
    const d = new Date(Number(unixSecs) * 1000);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleString();
  }

  function isoTime(unixSecs) {
    const d = new Date(Number(unixSecs) * 1000);
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  }

  function sentence(text) {
    text = String(text || "").trim();
    if (!text) return "";
    return /[.!?)]$/.test(text) ? text : text + ".";
  }

  /** `/a/b` for display. */
  function displayPath(segs) {
    return "/" + segs.join("/");
  }

  /** The URL path of a file or directory, each segment percent-encoded. */
  function urlPath(segs) {
    return "/" + segs.map(encodeURIComponent).join("/");
  }

  /** The listing URL of a directory: `/` or `/a/b/`. */
  function dirUrl(segs) {
    return segs.length ? urlPath(segs) + "/" : "/";
  }

  function splitPath(text) {
    return String(text || "")
      .split("/")
      .filter((s) => s.length > 0);
  }

  function sameDir(a, b) {
    return a.length === b.length && a.every((s, i) => s === b[i]);
  }

  // ---------------------------------------------------------------------------------------
  // API calls and their errors
  // ---------------------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, code, message, detail) {
      super(message || code || "HTTP " + status);
      this.status = status;
      this.code = code || "";
      this.apiMessage = message || "";
      this.detail = detail || "";
    }
  }

  /** An ApiFailure from the error envelope `{"success":false,"error":CODE,"message":…}`. */
  function failureFromText(status, text) {
    let body = null;
    try {
      body = JSON.parse(text);
    } catch (_) {
      body = null;
    }
    if (body && typeof body === "object") {
      const code = typeof body.error === "string" ? body.error : "";
      const message = typeof body.message === "string" ? body.message : "";
      const detail = typeof body.detail === "string" ? body.detail : "";
      return new ApiFailure(status, code, message, detail);
    }
    return new ApiFailure(status, "", "", "");
  }

  async function failureFrom(resp) {
    let text = "";
    try {
      text = await resp.text();
    } catch (_) {
      text = "";
    }
    return failureFromText(resp.status, text);
  }

  const CODE_TITLES = {
    INVALID_PATH: "Invalid path",
    INVALID_REQUEST: "Invalid request",
    NOT_FOUND: "Not found",
    CONFLICT: "Conflict",
    GONE: "Expired",
    PRECONDITION_FAILED: "Changed meanwhile",
    PAYLOAD_TOO_LARGE: "Too large",
    FILE_TOO_LARGE: "File too large",
    RESPONSE_TOO_LARGE: "Response too large",
    TOO_MANY_DOWNLOADS: "Too many downloads at once",
    QUOTA_EXCEEDED: "Bandwidth quota used up",
    INTERNAL_ERROR: "Server error",
    STORAGE_ERROR: "Storage error",
    BAD_GATEWAY: "Internal hop failed",
    INVALID_URL: "Invalid URL",
    DOMAIN_BLOCKED: "Domain not allowed",
    DOWNLOAD_FORBIDDEN: "URL downloads are switched off",
    REMOTE_FILE_NOT_FOUND: "Remote file not found",
    NETWORK_ERROR: "Network error",
    DOWNLOAD_TIMEOUT: "Download timed out",
    CHECKSUM_MISMATCH: "Checksum mismatch",
    UNAUTHORIZED: "Not signed in",
    FORBIDDEN: "Not allowed",
  };

  function codeTitle(code) {
    return CODE_TITLES[code] || code || "Error";
  }

  /** What to tell the user about a failure, saying what to do where something can be done. */
  function describe(f) {
    if (!(f instanceof ApiFailure)) return sentence(f && f.message ? f.message : String(f));
    const m = sentence(f.detail || f.apiMessage);
    if (f.status === 0) return sentence(f.apiMessage || "The server could not be reached");
    if (f.status === 401) {
      return "The server did not accept the token" + (m ? ": " + m : ".") + " Check it and sign in again.";
    }
    if (f.code === "NO_TOKENS_CONFIGURED") {
      return "The server is not set up for sign-in yet: " + (m || "no API tokens are configured; an operator must set the api_tokens variable.");
    }
    if (f.status === 503) return "The service is unavailable right now" + (m ? ": " + m : ".") + " Try again later.";
    if (f.code === "DOWNLOAD_FORBIDDEN") {
      return "URL downloads are switched off on this server (the operator's allow_download setting)." + (m ? " " + m : "");
    }
    if (f.status === 403 && (f.code === "FORBIDDEN" || !f.code)) {
      return "This token is not allowed to do that: " + (m || "it lacks the scope this needs.") + " Ask for a token with that scope.";
    }
    if (f.code === "QUOTA_EXCEEDED") {
      return "Your bandwidth quota is used up: " + (m || "nothing more can be sent.") + " Ask an operator to raise it.";
    }
    if (f.code === "TOO_MANY_DOWNLOADS") {
      return "Too many URL downloads are running at once. Wait for one to finish or cancel one." + (m ? " " + m : "");
    }
    if (f.status === 429) return "Too many requests: wait a moment and try again." + (m ? " " + m : "");
    const title = f.code ? codeTitle(f.code) : "Request failed";
    return title + (m ? ": " + m : ".") + " (HTTP " + f.status + (f.code ? ", " + f.code : "") + ")";
  }

  /** A same-origin fetch with the bearer header; resolves with a 2xx Response, else throws. */
  async function api(method, target, options) {
    options = options || {};
    const generation = state.generation;
    const token = options.token || state.token;
    const headers = new Headers(options.headers || {});
    let resp;
    try {
      headers.set("Authorization", "Bearer " + token);
      resp = await fetch(target, {
        method,
        headers,
        body: options.body,
        cache: "no-store",
        credentials: "omit",
        redirect: "follow",
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      throw new ApiFailure(0, "", "The server could not be reached (" + (e && e.message ? e.message : "network error") + ")");
    }
    if (!resp.ok) {
      const failure = await failureFrom(resp);
      if (failure.status === 401 && !options.signingIn && generation === state.generation && state.token) {
        signOut(describe(failure));
      }
      throw failure;
    }
    return resp;
  }

  async function apiJson(method, target, options) {
    const resp = await api(method, target, options);
    try {
      return await resp.json();
    } catch (_) {
      throw new ApiFailure(resp.status, "", "The answer was cut short or is not JSON; try again");
    }
  }

  /** The body of a 2xx answer as a Blob, with progress; a short body is an error. */
  async function readBlob(resp, onProgress) {
    const type = resp.headers.get("Content-Type") || "application/octet-stream";
    const total = Number(resp.headers.get("Content-Length")) || 0;
    if (!resp.body || typeof resp.body.getReader !== "function") return resp.blob();
    const reader = resp.body.getReader();
    const chunks = [];
    let received = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        received += value.length;
        if (onProgress) onProgress(received, total);
      }
    } catch (_) {
      throw new ApiFailure(resp.status, "", "The transfer was cut short after " + formatBytes(received) + "; nothing was saved");
    }
    if (total && received !== total) {
      throw new ApiFailure(resp.status, "", "The transfer was cut short (" + received + " of " + total + " bytes); nothing was saved");
    }
    return new Blob(chunks, { type });
  }

  /** Saves a Blob under `name` through a blob: URL (no token in any link). */
  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    a.rel = "noopener";
    a.hidden = true;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function safeFileName(name, fallback) {
    // eslint-disable-next-line no-control-regex
    const cleaned = String(name || "").replace(/[\u0000-\u001f\u007f/\\]/g, "_").trim();
    return cleaned && cleaned !== "." && cleaned !== ".." ? cleaned : fallback;
  }

  /** The file name a Content-Disposition names (`filename*` first), else `fallback`. */
  function dispositionName(header, fallback) {
    if (!header) return fallback;
    let m = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
    if (m) {
      try {
        return safeFileName(decodeURIComponent(m[1].trim()), fallback);
      } catch (_) {
        /* fall through to filename= */
      }
    }
    m = /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(header) || /filename\s*=\s*([^;]+)/i.exec(header);
    if (m) return safeFileName(m[1].replace(/\\(.)/g, "$1").trim(), fallback);
    return fallback;
  }

  // ---------------------------------------------------------------------------------------
  // Sign in / out
  // ---------------------------------------------------------------------------------------

  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeToken(token) {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      /* private mode without storage: the token lives in memory for this page only */
    }
  }

  function forgetToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* nothing stored */
    }
  }

  /** Checks a token with a one-entry root listing. Returns a notice (or "") when usable. */
  async function verifyToken(token) {
    try {
      await api("GET", "/?limit=1", { token, signingIn: true });
      return { ok: true, notice: "" };
    } catch (f) {
      if (f instanceof ApiFailure && (f.status === 401 || f.status === 503 || f.status === 0 || f.status >= 500)) {
        return { ok: false, message: describe(f) };
      }
      // 403 (a scope other than file.read), 429…: the token itself is valid.
      return { ok: true, notice: "Signed in, but: " + describe(f) };
    }
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("token-input");
    const token = input.value.trim();
    setText("signin-error", "");
    if (!token) {
      setText("signin-error", "Enter a token.");
      input.focus();
      return;
    }
    if (!/^[\x21-\x7e]+$/.test(token)) {
      setText("signin-error", "A token is printable ASCII without spaces; check what was pasted.");
      input.focus();
      return;
    }
    const button = $("signin-button");
    button.disabled = true;
    setText("signin-error", "");
    try {
      const result = await verifyToken(token);
      if (!result.ok) {
        setText("signin-error", result.message);
        input.focus();
        input.select();
        return;
      }
      input.value = "";
      storeToken(token);
      startSession(token, result.notice);
    } finally {
      button.disabled = false;
    }
  }

  function startSession(token, notice) {
    state.token = token;
    state.generation++;
    $("signin-section").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    setText("session-info", "Signed in");
    showNotice(notice);
    route();
    loadUsage();
    loadHistory(0);
    schedulePoll(0);
    $("main").focus();
  }

  function showNotice(text) {
    const node = $("global-notice");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function signOut(message) {
    state.generation++;
    state.token = null;
    forgetToken();
    clearTimeout(state.pollTimer);
    for (const job of state.uploads) if (job.xhr) job.xhr.abort();
    state.uploads = [];
    state.uploading = false;
    state.downloads.clear();
    state.selected.clear();
    state.prepared = null;
    for (const id of ["listing-body", "active-list", "history-list", "upload-list", "breadcrumbs"]) $(id).replaceChildren();
    for (const id of [
      "files-error", "files-status", "zip-error", "zip-status", "remote-error", "remote-status",
      "upload-error", "active-error", "history-error", "usage-error", "goto-error",
    ]) setText(id, "");
    $("zip-confirm").hidden = true;
    showNotice("");
    $("app").hidden = true;
    $("session").hidden = true;
    $("signin-section").hidden = false;
    setText("signin-error", message || "");
    $("token-input").focus();
  }

  // ---------------------------------------------------------------------------------------
  // Directories: routing, breadcrumbs, listing
  // ---------------------------------------------------------------------------------------

  function dirFromHash() {
    const raw = location.hash.replace(/^#/, "");
    const segs = [];
    for (const part of splitPath(raw)) {
      try {
        segs.push(decodeURIComponent(part));
      } catch (_) {
        segs.push(part);
      }
    }
    return segs;
  }

  function hashFor(segs) {
    return "#/" + segs.map(encodeURIComponent).join("/");
  }

  function navigate(segs) {
    const hash = hashFor(segs);
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  function route() {
    if (!state.token) return;
    const segs = dirFromHash();
    const changed = !sameDir(segs, state.dir);
    state.dir = segs;
    if (changed) {
      state.selected.clear();
      hidePrepared();
    }
    state.listing.cursors = [null];
    state.listing.index = 0;
    renderBreadcrumbs();
    const where = displayPath(segs);
    setText("upload-target", where);
    setText("remote-target", where);
    setText("listing-caption", "Contents of " + where);
    for (const id of ["goto-error", "files-status", "zip-status", "zip-error", "upload-error"]) setText(id, "");
    loadListing();
    if ($("history-here").checked) loadHistory(0);
  }

  function renderBreadcrumbs() {
    const list = $("breadcrumbs");
    list.replaceChildren();
    const crumbs = [{ label: "Home", segs: [] }];
    state.dir.forEach((name, i) => crumbs.push({ label: name, segs: state.dir.slice(0, i + 1) }));
    crumbs.forEach((crumb, i) => {
      const li = el("li");
      const a = el("a", { href: hashFor(crumb.segs), "data-testid": "breadcrumb" }, crumb.label);
      if (i === crumbs.length - 1) a.setAttribute("aria-current", "page");
      li.appendChild(a);
      list.appendChild(li);
    });
  }

  async function loadListing() {
    const generation = state.generation;
    const segs = state.dir.slice();
    const listing = state.listing;
    const limit = Number($("listing-limit").value) || 100;
    const cursor = listing.cursors[listing.index];
    const query = new URLSearchParams();
    query.set("limit", String(limit));
    if (cursor) query.set("cursor", cursor);
    setText("files-error", "");
    listing.loading = true;
    $("listing").setAttribute("aria-busy", "true");
    try {
      const body = await apiJson("GET", dirUrl(segs) + "?" + query.toString());
      if (generation !== state.generation || !sameDir(segs, state.dir)) return;
      listing.exists = true;
      listing.entries = Array.isArray(body.entries) ? body.entries : [];
      const next = typeof body.next_cursor === "string" ? body.next_cursor : null;
      listing.cursors.length = listing.index + 1;
      if (next) listing.cursors.push(next);
      renderListing();
    } catch (f) {
      if (generation !== state.generation || !sameDir(segs, state.dir)) return;
      listing.entries = [];
      listing.cursors.length = listing.index + 1;
      if (f instanceof ApiFailure && f.status === 404 && segs.length) {
        listing.exists = false;
        renderListing();
      } else {
        listing.exists = true;
        renderListing();
        setText("files-error", describe(f));
      }
    } finally {
      listing.loading = false;
      $("listing").removeAttribute("aria-busy");
    }
  }

  function renderListing() {
    const body = $("listing-body");
    const listing = state.listing;
    body.replaceChildren();
    listing.entries.forEach((entry, i) => body.appendChild(listingRow(entry, i)));

    const empty = $("listing-empty");
    if (!listing.exists) {
      empty.textContent =
        "This folder does not exist yet. Upload a file or start a URL download here to create it.";
      empty.hidden = false;
    } else if (!listing.entries.length) {
      empty.textContent = listing.index > 0 ? "No more entries." : "This folder is empty.";
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
    $("listing-prev").disabled = listing.index === 0;
    $("listing-next").disabled = listing.cursors.length <= listing.index + 1;
    const paged = listing.index > 0 || listing.cursors.length > 1;
    setText("listing-page", paged ? "Page " + (listing.index + 1) : "");
    updateSelectionUi();
  }

  function entryPath(name) {
    return displayPath(state.dir.concat([name]));
  }

  function listingRow(entry, index) {
    const name = String(entry.name);
    const isDir = entry.type === "dir";
    const path = entryPath(name);
    const tr = el("tr", { "data-testid": "listing-row", "data-kind": isDir ? "dir" : "file" });
    tr.dataset.name = name;
    tr.dataset.path = path;

    const selectId = "select-" + index;
    const select = el("input", {
      type: "checkbox",
      id: selectId,
      "data-testid": "select-checkbox",
      "aria-label": "Select " + name,
    });
    select.checked = state.selected.has(path);
    if (select.checked) tr.classList.add("selected");
    select.addEventListener("change", () => {
      if (select.checked) state.selected.set(path, { name, type: entry.type });
      else state.selected.delete(path);
      tr.classList.toggle("selected", select.checked);
      hidePrepared();
      updateSelectionUi();
    });
    tr.appendChild(el("td", { class: "c-select" })).appendChild(select);

    const nameCell = el("td", { class: "c-name" });
    const wrap = el("span", { class: "entry-name" });
    wrap.appendChild(el("span", { class: "kind-icon " + (isDir ? "dir" : "file"), "aria-hidden": "true" }));
    if (isDir) {
      const link = el("a", { href: hashFor(state.dir.concat([name])), "data-testid": "entry-link" }, name);
      wrap.appendChild(link);
    } else {
      const button = el("button", { type: "button", class: "linkish", "data-testid": "entry-name" }, name);
      button.setAttribute("aria-label", "Download " + name);
      button.addEventListener("click", () => downloadFile(name, tr));
      wrap.appendChild(button);
    }
    nameCell.appendChild(wrap);
    nameCell.appendChild(el("span", { class: "row-error", "data-testid": "row-error", role: "status", "aria-live": "polite" }));
    tr.appendChild(nameCell);

    const type = entry.content_type ? String(entry.content_type).split(";")[0].trim() : "";
    const kind = isDir ? "Folder" : type ? "File · " + type : "File";
    tr.appendChild(el("td", { class: "c-kind" }, kind));

    const sizeCell = el("td", { class: "c-size", "data-testid": "entry-size" });
    if (!isDir && entry.size !== undefined && entry.size !== null) {
      sizeCell.textContent = formatBytes(entry.size);
      sizeCell.dataset.size = String(entry.size);
      sizeCell.title = formatExact(entry.size);
    }
    tr.appendChild(sizeCell);

    const modCell = el("td", { class: "c-modified", "data-testid": "entry-modified" });
    if (entry.modified !== undefined && entry.modified !== null) {
      const iso = isoTime(entry.modified);
      modCell.appendChild(el("time", { datetime: iso }, formatTime(entry.modified)));
    }
    tr.appendChild(modCell);

    const actions = el("td", { class: "c-actions" });
    if (isDir) {
      const open = el("button", { type: "button", class: "small", "data-testid": "row-open" }, "Open");
      open.setAttribute("aria-label", "Open " + name);
      open.addEventListener("click", () => navigate(state.dir.concat([name])));
      actions.appendChild(open);
    } else {
      const download = el("button", { type: "button", class: "small", "data-testid": "row-download" }, "Download");
      download.setAttribute("aria-label", "Download " + name);
      download.addEventListener("click", () => downloadFile(name, tr));
      actions.appendChild(download);
    }
    const del = el("button", { type: "button", class: "small danger", "data-testid": "row-delete" }, "Delete");
    del.setAttribute("aria-label", "Delete " + name);
    del.addEventListener("click", () => deleteEntry(name, isDir, tr));
    actions.appendChild(del);
    tr.appendChild(actions);
    return tr;
  }

  function rowError(tr, text) {
    const node = tr.querySelector(".row-error");
    if (node) node.textContent = text || "";
  }

  async function downloadFile(name, tr) {
    const segs = state.dir.concat([name]);
    rowError(tr, "");
    setText("files-status", "Downloading " + name + "…");
    try {
      const resp = await api("GET", urlPath(segs));
      const blob = await readBlob(resp, (got, total) => {
        setText("files-status", "Downloading " + name + ": " + formatBytes(got) + (total ? " of " + formatBytes(total) : ""));
      });
      saveBlob(blob, safeFileName(name, "download"));
      setText("files-status", "Saved " + name + " (" + formatBytes(blob.size) + ").");
      loadUsage();
    } catch (f) {
      setText("files-status", "");
      rowError(tr, describe(f));
    }
  }

  async function deleteEntry(name, isDir, tr) {
    const question = isDir
      ? "Delete the folder \u201c" + name + "\u201d and everything in it? This cannot be undone."
      : "Delete the file \u201c" + name + "\u201d? This cannot be undone.";
    if (!window.confirm(question)) return;
    rowError(tr, "");
    const segs = state.dir.concat([name]);
    try {
      await api("DELETE", urlPath(segs));
      const path = entryPath(name);
      for (const key of Array.from(state.selected.keys())) {
        if (key === path || key.startsWith(path + "/")) state.selected.delete(key);
      }
      hidePrepared();
      setText("files-status", "Deleted " + name + ".");
      loadListing();
    } catch (f) {
      rowError(tr, describe(f));
    }
  }

  function gotoFolder(event) {
    event.preventDefault();
    const text = $("goto-input").value.trim();
    setText("goto-error", "");
    const segs = splitPath(text.startsWith("/") ? text : displayPath(state.dir) + "/" + text);
    if (segs.some((s) => s === "." || s === "..")) {
      setText("goto-error", "A path cannot contain \u201c.\u201d or \u201c..\u201d segments.");
      return;
    }
    if (segs.length && segs[0] === "api") {
      setText("goto-error", "The top-level name \u201capi\u201d is reserved for the app; no files can live there.");
      return;
    }
    $("goto-input").value = "";
    navigate(segs);
  }

  // ---------------------------------------------------------------------------------------
  // Selection and multi-file download
  // ---------------------------------------------------------------------------------------

  function updateSelectionUi() {
    const n = state.selected.size;
    setText("selection-count", n === 0 ? "Nothing selected" : n === 1 ? "1 item selected" : n + " items selected");
    $("zip-button").disabled = n === 0;
    $("clear-selection").disabled = n === 0;
    const boxes = Array.from(document.querySelectorAll("#listing-body input[type=checkbox]"));
    const all = $("select-all");
    const checked = boxes.filter((b) => b.checked).length;
    all.checked = boxes.length > 0 && checked === boxes.length;
    all.indeterminate = checked > 0 && checked < boxes.length;
    all.disabled = boxes.length === 0;
  }

  function selectAll() {
    const on = $("select-all").checked;
    for (const row of document.querySelectorAll("#listing-body tr")) {
      const box = row.querySelector("input[type=checkbox]");
      box.checked = on;
      row.classList.toggle("selected", on);
      const path = row.dataset.path;
      if (on) state.selected.set(path, { name: row.dataset.name, type: row.dataset.kind });
      else state.selected.delete(path);
    }
    hidePrepared();
    updateSelectionUi();
  }

  function clearSelection() {
    state.selected.clear();
    for (const row of document.querySelectorAll("#listing-body tr")) {
      row.querySelector("input[type=checkbox]").checked = false;
      row.classList.remove("selected");
    }
    hidePrepared();
    updateSelectionUi();
  }

  function hidePrepared() {
    state.prepared = null;
    $("zip-confirm").hidden = true;
    setText("zip-size", "");
  }

  /** Prepare the selection, then show what the download will be and ask to confirm. */
  async function prepareZip() {
    const paths = Array.from(state.selected.keys());
    if (!paths.length) return;
    const generation = state.generation;
    hidePrepared();
    setText("zip-error", "");
    setText("zip-status", "Preparing " + paths.length + (paths.length === 1 ? " item…" : " items…"));
    $("zip-button").disabled = true;
    try {
      const body = await apiJson("POST", "/api/download/prepare", {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ Filelist: paths }),
      });
      const id = body && typeof body.rslt === "string" ? body.rslt : "";
      if (!id) throw new ApiFailure(200, "", "The server did not return a download id");
      // HEAD tells the exact size (and the name) without sending or counting a byte.
      let size = null;
      let name = null;
      let type = "";
      try {
        const head = await api("HEAD", "/api/download/multi?id=" + encodeURIComponent(id));
        const length = head.headers.get("Content-Length");
        size = length !== null && length !== "" ? Number(length) : null;
        type = head.headers.get("Content-Type") || "";
        name = dispositionName(head.headers.get("Content-Disposition"), null);
      } catch (f) {
        if (f instanceof ApiFailure && (f.code === "QUOTA_EXCEEDED" || f.status === 403 || f.status === 409)) throw f;
        // Otherwise the size is just unknown; the download itself will say what is wrong.
      }
      if (generation !== state.generation) return;
      const oneFile = paths.length === 1 && (state.selected.get(paths[0]) || {}).type === "file";
      const single = oneFile || (type !== "" && !type.startsWith("application/zip"));
      state.prepared = { id, paths, name, size, single };
      const sizeText = size === null || Number.isNaN(size) ? "size unknown" : formatBytes(size) + " (" + formatExact(size) + ")";
      const zipSize = $("zip-size");
      if (single) {
        zipSize.textContent = "One file, " + (name || paths[0]) + ": " + sizeText + ". It is sent as itself, not zipped.";
      } else {
        zipSize.textContent =
          "ZIP archive " + (name ? name + " " : "") + "of " + paths.length + " selected items: " + sizeText + ".";
      }
      if (size !== null && !Number.isNaN(size)) zipSize.dataset.bytes = String(size);
      else delete zipSize.dataset.bytes;
      $("zip-confirm").hidden = false;
      setText("zip-status", "");
      $("zip-confirm-button").focus();
    } catch (f) {
      setText("zip-status", "");
      setText("zip-error", describe(f));
    } finally {
      $("zip-button").disabled = state.selected.size === 0;
    }
  }

  async function downloadPrepared() {
    const prepared = state.prepared;
    if (!prepared) return;
    $("zip-confirm").hidden = true;
    setText("zip-error", "");
    setText("zip-status", "Downloading…");
    $("zip-button").disabled = true;
    try {
      const resp = await api("POST", "/api/download/multi?id=" + encodeURIComponent(prepared.id));
      const fallback = prepared.single ? safeFileName(prepared.paths[0].split("/").pop(), "download") : "download.zip";
      const name = dispositionName(resp.headers.get("Content-Disposition"), prepared.name || fallback);
      const blob = await readBlob(resp, (got, total) => {
        setText(
          "zip-status",
          "Downloading " + name + ": " + formatBytes(got) + (total ? " of " + formatBytes(total) + " (" + Math.floor((got * 100) / total) + " %)" : "")
        );
      });
      saveBlob(blob, name);
      setText("zip-status", "Saved " + name + " (" + formatBytes(blob.size) + ").");
      state.prepared = null;
      loadUsage();
    } catch (f) {
      setText("zip-status", "");
      setText("zip-error", describe(f));
    } finally {
      $("zip-button").disabled = state.selected.size === 0;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Uploads
  // ---------------------------------------------------------------------------------------

  function enqueueUploads(files) {
    if (!files.length) return;
    setText("upload-error", "");
    const existing = new Set(state.listing.entries.map((e) => String(e.name)));
    const clashes = files.filter((f) => !f.rel.length && existing.has(f.file.name)).map((f) => f.file.name);
    if (clashes.length) {
      const list = clashes.slice(0, 5).join(", ") + (clashes.length > 5 ? ", …" : "");
      if (!window.confirm("Replace the existing " + (clashes.length === 1 ? "file " : "files ") + list + "?")) return;
    }
    const base = state.dir.slice();
    for (const { file, rel } of files) {
      const segs = base.concat(rel, [file.name]);
      const job = { file, segs, xhr: null, item: uploadItem(file, segs) };
      state.uploads.push(job);
    }
    pumpUploads();
  }

  function uploadItem(file, segs) {
    const li = el("li", { class: "progress-item", "data-testid": "upload-item", "data-status": "queued" });
    li.dataset.name = file.name;
    const line = el("div", { class: "line" });
    line.appendChild(el("span", { class: "name" }, displayPath(segs)));
    const cancel = el("button", { type: "button", class: "small", "data-testid": "upload-cancel" }, "Cancel");
    cancel.setAttribute("aria-label", "Cancel the upload of " + file.name);
    line.appendChild(cancel);
    li.appendChild(line);
    const bar = el("progress", { max: "100", value: "0", "data-testid": "upload-progress", "data-percent": "0" });
    bar.setAttribute("aria-label", "Upload progress of " + file.name);
    li.appendChild(bar);
    const meta = el("span", { class: "meta" }, "Waiting · " + formatBytes(file.size));
    li.appendChild(meta);
    const err = el("span", { class: "row-error", role: "alert" });
    li.appendChild(err);
    $("upload-list").prepend(li);
    const item = { li, bar, meta, err, cancel };
    cancel.addEventListener("click", () => {
      const job = state.uploads.find((j) => j.item === item);
      if (job && job.xhr) job.xhr.abort();
      else if (job) {
        state.uploads = state.uploads.filter((j) => j !== job);
        finishItem(item, "cancelled", "Cancelled.");
      }
    });
    return item;
  }

  function finishItem(item, status, text, error) {
    item.li.dataset.status = status;
    item.meta.textContent = text;
    item.err.textContent = error || "";
    item.cancel.textContent = "Dismiss";
    item.cancel.setAttribute("aria-label", "Dismiss");
    item.cancel.onclick = () => item.li.remove();
  }

  async function pumpUploads() {
    if (state.uploading) return;
    state.uploading = true;
    try {
      while (state.uploads.length && state.token) {
        const job = state.uploads[0];
        await runUpload(job);
        state.uploads = state.uploads.filter((j) => j !== job);
      }
    } finally {
      state.uploading = false;
    }
  }

  function runUpload(job) {
    const { file, segs, item } = job;
    const generation = state.generation;
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      job.xhr = xhr;
      item.li.dataset.status = "uploading";
      item.meta.textContent = "Uploading · 0 of " + formatBytes(file.size);
      const started = Date.now();
      xhr.open("PUT", urlPath(segs));
      xhr.setRequestHeader("Authorization", "Bearer " + state.token);
      xhr.upload.addEventListener("progress", (e) => {
        const total = e.lengthComputable ? e.total : file.size;
        const pct = total ? Math.min(100, (e.loaded * 100) / total) : 0;
        item.bar.value = pct;
        item.bar.dataset.percent = String(Math.floor(pct));
        const secs = (Date.now() - started) / 1000;
        const rate = secs > 0 ? e.loaded / secs : 0;
        item.meta.textContent =
          "Uploading · " + formatBytes(e.loaded) + " of " + formatBytes(total) + " · " + Math.floor(pct) + " %" +
          (rate ? " · " + formatBytes(rate) + "/s" : "");
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          item.bar.value = 100;
          item.bar.dataset.percent = "100";
          finishItem(item, "done", (xhr.status === 201 ? "Uploaded" : "Replaced") + " · " + formatBytes(file.size));
          if (generation === state.generation && sameDir(segs.slice(0, state.dir.length), state.dir)) loadListing();
        } else {
          const f = failureFromText(xhr.status, xhr.responseText);
          finishItem(item, "failed", "Failed", describe(f));
          if (f.status === 401 && generation === state.generation) signOut(describe(f));
        }
        resolve();
      });
      xhr.addEventListener("error", () => {
        finishItem(item, "failed", "Failed", "The upload broke off (network error); nothing was stored.");
        resolve();
      });
      xhr.addEventListener("abort", () => {
        finishItem(item, "cancelled", "Cancelled; nothing was stored.");
        resolve();
      });
      xhr.send(file);
    });
  }

  /** Files (and, for dropped folders, their relative directories) from a drop. */
  async function droppedFiles(dataTransfer) {
    const items = dataTransfer.items ? Array.from(dataTransfer.items) : [];
    const entries = items
      .filter((i) => i.kind === "file" && typeof i.webkitGetAsEntry === "function")
      .map((i) => i.webkitGetAsEntry())
      .filter(Boolean);
    if (!entries.length) return Array.from(dataTransfer.files || []).map((file) => ({ file, rel: [] }));
    const out = [];
    for (const entry of entries) await walkEntry(entry, [], out);
    return out;
  }

  function walkEntry(entry, rel, out) {
    if (entry.isFile) {
      return new Promise((resolve) =>
        entry.file(
          (file) => {
            out.push({ file, rel });
            resolve();
          },
          () => resolve()
        )
      );
    }
    if (entry.isDirectory) {
      const reader = entry.createReader();
      const sub = rel.concat([entry.name]);
      return new Promise((resolve) => {
        const batch = () =>
          reader.readEntries(
            async (children) => {
              if (!children.length) return resolve();
              for (const child of children) await walkEntry(child, sub, out);
              batch();
            },
            () => resolve()
          );
        batch();
      });
    }
    return Promise.resolve();
  }

  function setupDropZone() {
    const zone = $("drop-zone");
    let depth = 0;
    zone.addEventListener("dragenter", (e) => {
      e.preventDefault();
      depth++;
      zone.classList.add("dragover");
    });
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("dragover");
    });
    zone.addEventListener("drop", async (e) => {
      e.preventDefault();
      depth = 0;
      zone.classList.remove("dragover");
      if (!e.dataTransfer) return;
      const files = await droppedFiles(e.dataTransfer);
      if (!files.length) {
        setText("upload-error", "Nothing to upload was dropped.");
        return;
      }
      enqueueUploads(files);
    });
    // A drop that misses the zone must not navigate away from the console.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    $("upload-input").addEventListener("change", (e) => {
      const input = e.target;
      const files = Array.from(input.files || []).map((file) => ({ file, rel: [] }));
      enqueueUploads(files);
      input.value = "";
    });
  }

  // ---------------------------------------------------------------------------------------
  // Remote URL downloads: start, active list with progress, cancel
  // ---------------------------------------------------------------------------------------

  async function startRemote(event) {
    event.preventDefault();
    setText("remote-error", "");
    setText("remote-status", "");
    const urlInput = $("remote-url");
    const url = urlInput.value.trim();
    const filename = $("remote-filename").value.trim();
    const timeout = $("remote-timeout").value.trim();
    if (!url) {
      setText("remote-error", "Enter the URL to download.");
      urlInput.focus();
      return;
    }
    if (!/^https?:\/\//i.test(url)) {
      setText("remote-error", "Only http:// and https:// URLs can be downloaded.");
      urlInput.focus();
      return;
    }
    if (filename && (filename.includes("/") || filename === "." || filename === "..")) {
      setText("remote-error", "The file name must be a single name, without \u201c/\u201d.");
      $("remote-filename").focus();
      return;
    }
    if (timeout && !(/^\d+$/.test(timeout) && Number(timeout) >= 1 && Number(timeout) <= 86400)) {
      setText("remote-error", "The timeout is a whole number of seconds from 1 to 86400.");
      $("remote-timeout").focus();
      return;
    }
    const query = new URLSearchParams();
    query.set("download", url);
    if (filename) query.set("filename", filename);
    if (timeout) query.set("timeout", timeout);
    const segs = state.dir.slice();
    const target = (segs.length ? urlPath(segs) : "/") + "?" + query.toString();
    const button = $("remote-submit");
    button.disabled = true;
    try {
      const body = await apiJson("GET", target);
      const id = String(body.download_id || "");
      setText("remote-status", "Started: " + (body.path ? "/" + body.path : body.filename || url));
      urlInput.value = "";
      $("remote-filename").value = "";
      if (id && !state.downloads.has(id)) {
        state.downloads.set(id, {
          id,
          filename: String(body.filename || ""),
          file_path: String(body.path || ""),
          directory: segs.join("/"),
          url,
          status: "starting",
          current_size: 0,
          expected_size: null,
          progress_percentage: null,
          finished: false,
          samples: null,
          rate: 0,
        });
        renderActive();
      }
      schedulePoll(0);
    } catch (f) {
      setText("remote-error", describe(f));
      loadHistory(state.history.index === 0 ? 0 : state.history.index); // refusals are recorded there
    } finally {
      button.disabled = false;
    }
  }

  function schedulePoll(delay) {
    clearTimeout(state.pollTimer);
    if (!state.token) return;
    const generation = state.generation;
    state.pollTimer = setTimeout(() => pollActive(generation), delay);
  }

  function anyRunning() {
    for (const d of state.downloads.values()) if (!d.finished) return true;
    return false;
  }

  async function pollActive(generation) {
    if (generation !== state.generation || !state.token) return;
    let delay = POLL_IDLE_MS;
    try {
      const body = await apiJson("GET", "/api/v1/downloads");
      if (generation !== state.generation) return;
      setText("active-error", "");
      const now = Date.now();
      const seen = new Set();
      for (const item of Array.isArray(body.downloads) ? body.downloads : []) {
        const id = String(item.id);
        seen.add(id);
        const tracked = state.downloads.get(id) || { id, samples: null, rate: 0 };
        tracked.finished = false;
        updateRate(tracked, Number(item.current_size) || 0, now);
        Object.assign(tracked, {
          filename: String(item.filename || ""),
          file_path: String(item.file_path || ""),
          directory: String(item.directory || ""),
          url: String(item.url || ""),
          status: String(item.status || "downloading"),
          current_size: Number(item.current_size) || 0,
          expected_size: item.expected_size === null || item.expected_size === undefined ? null : Number(item.expected_size),
          progress_percentage:
            item.progress_percentage === null || item.progress_percentage === undefined ? null : Number(item.progress_percentage),
        });
        state.downloads.set(id, tracked);
      }
      // Gone from the active list: read how each one ended.
      const ended = [];
      for (const d of state.downloads.values()) {
        if (!d.finished && !seen.has(d.id)) ended.push(d);
      }
      let anyEnded = false;
      for (const d of ended) {
        try {
          const rec = await apiJson("GET", "/api/v1/downloads/" + encodeURIComponent(d.id));
          const status = String(rec.status || "");
          if (status === "starting" || status === "downloading") continue; // not ended after all
          d.status = status;
          d.finished = true;
          d.total_bytes = rec.total_bytes === null || rec.total_bytes === undefined ? null : Number(rec.total_bytes);
          if (rec.current_size !== undefined && rec.current_size !== null) d.current_size = Number(rec.current_size);
          if (rec.expected_size !== undefined && rec.expected_size !== null) d.expected_size = Number(rec.expected_size);
          d.error = rec.error || null;
          d.message = rec.message || null;
          anyEnded = true;
        } catch (f) {
          if (generation !== state.generation) return;
          if (f instanceof ApiFailure && f.status === 404) {
            d.finished = true;
            d.status = "unknown";
            d.message = "The download's record is gone.";
            anyEnded = true;
          }
        }
      }
      renderActive();
      if (anyEnded) {
        loadListing();
        loadHistory(0);
      }
      delay = anyRunning() ? POLL_ACTIVE_MS : POLL_IDLE_MS;
    } catch (f) {
      if (generation !== state.generation) return;
      setText("active-error", describe(f));
      delay = f instanceof ApiFailure && (f.status === 403 || f.status === 503) ? 60000 : 5000;
    }
    if (document.hidden && delay < POLL_IDLE_MS) delay = POLL_IDLE_MS;
    schedulePoll(delay);
  }

  /** The transfer rate over the last few seconds of samples (bytes per second). */
  function updateRate(d, bytes, now) {
    let samples = Array.isArray(d.samples) ? d.samples : [];
    if (samples.length && bytes < samples[samples.length - 1].bytes) samples = []; // started over
    samples.push({ t: now, bytes });
    while (samples.length > 2 && now - samples[0].t > 6000) samples.shift();
    d.samples = samples;
    const first = samples[0];
    const span = now - first.t;
    d.rate = samples.length > 1 && span >= 800 ? ((bytes - first.bytes) * 1000) / span : 0;
  }

  function renderActive() {
    const list = $("active-list");
    const rows = new Map(Array.from(list.children).map((li) => [li.dataset.id, li]));
    for (const d of state.downloads.values()) {
      let li = rows.get(d.id);
      if (!li) {
        li = activeRow(d);
        list.appendChild(li);
      }
      rows.delete(d.id);
      updateActiveRow(li, d);
    }
    for (const li of rows.values()) li.remove();
    $("active-empty").hidden = state.downloads.size > 0;
    $("active-empty").textContent = "No download is running.";
  }

  function activeRow(d) {
    const li = el("li", { class: "progress-item", "data-testid": "active-row" });
    li.dataset.id = d.id;
    const line = el("div", { class: "line" });
    const name = el("span", { class: "name" });
    const badge = el("span", { class: "badge" });
    line.appendChild(name);
    line.appendChild(badge);
    li.appendChild(line);
    li.appendChild(el("span", { class: "meta target" }));
    const bar = el("progress", { max: "100", "data-testid": "active-progress" });
    li.appendChild(bar);
    const meta = el("div", { class: "line" });
    meta.appendChild(el("span", { class: "meta numbers", "data-testid": "active-numbers" }));
    const button = el("button", { type: "button", class: "small", "data-testid": "active-cancel" }, "Cancel");
    button.addEventListener("click", () => {
      const tracked = state.downloads.get(d.id);
      if (tracked && tracked.finished) {
        state.downloads.delete(d.id);
        renderActive();
      } else {
        cancelDownload(d.id, li);
      }
    });
    meta.appendChild(button);
    li.appendChild(meta);
    li.appendChild(el("span", { class: "row-error", "data-testid": "active-row-error", role: "status" }));
    return li;
  }

  function updateActiveRow(li, d) {
    li.dataset.status = d.status;
    li.dataset.filename = d.filename;
    li.querySelector(".name").textContent = d.filename || d.url || d.id;
    const badge = li.querySelector(".badge");
    badge.textContent = d.status;
    badge.className = "badge " + d.status;
    li.querySelector(".target").textContent = "into /" + (d.directory || "") + (d.url ? " · from " + d.url : "");
    const bar = li.querySelector("progress");
    bar.setAttribute("aria-label", "Progress of " + (d.filename || d.id));
    let pct = null;
    if (d.finished && d.status === "completed") pct = 100;
    else if (d.progress_percentage !== null && d.progress_percentage !== undefined && Number.isFinite(d.progress_percentage)) pct = d.progress_percentage;
    else if (d.expected_size) pct = (d.current_size * 100) / d.expected_size;
    else if (d.finished) pct = 0; // ended without a size: a still bar, not a moving one
    if (pct === null) {
      bar.removeAttribute("value"); // indeterminate: the size is unknown
      bar.dataset.percent = "";
    } else {
      pct = Math.max(0, Math.min(100, pct));
      bar.value = pct;
      bar.dataset.percent = String(Math.floor(pct * 10) / 10);
    }
    const parts = [];
    if (d.finished) {
      if (d.status === "completed") {
        const total = d.total_bytes !== null && d.total_bytes !== undefined ? d.total_bytes : d.current_size;
        parts.push("Completed · " + formatBytes(total));
      } else if (d.status === "cancelled") {
        parts.push("Cancelled");
      } else {
        parts.push(d.status === "failed" ? "Failed" : "Ended");
      }
    } else {
      parts.push(formatBytes(d.current_size) + (d.expected_size ? " of " + formatBytes(d.expected_size) : ""));
      if (pct !== null) parts.push(Math.floor(pct) + " %");
      else parts.push("size unknown");
      if (d.rate > 0) parts.push(formatBytes(d.rate) + "/s");
      if (d.rate > 0 && d.expected_size && d.expected_size > d.current_size) {
        parts.push(formatDuration((d.expected_size - d.current_size) / d.rate) + " left");
      }
    }
    li.querySelector(".numbers").textContent = parts.join(" · ");
    const button = li.querySelector("button");
    if (d.finished) {
      button.textContent = "Dismiss";
      button.dataset.testid = "active-dismiss";
      button.setAttribute("aria-label", "Dismiss " + (d.filename || d.id));
    } else {
      button.textContent = "Cancel";
      button.dataset.testid = "active-cancel";
      button.setAttribute("aria-label", "Cancel the download of " + (d.filename || d.id));
    }
    const err = li.querySelector(".row-error");
    if (d.finished && d.status !== "completed") {
      const reason = d.error ? codeTitle(d.error) + (d.message ? ": " + sentence(d.message) : ".") : sentence(d.message || "");
      err.textContent = reason;
    } else if (!d.cancelError) {
      err.textContent = "";
    }
  }

  async function cancelDownload(id, li) {
    const button = li.querySelector("button");
    button.disabled = true;
    const err = li.querySelector(".row-error");
    err.textContent = "";
    const d = state.downloads.get(id);
    if (d) d.cancelError = false;
    try {
      await api("DELETE", "/api/v1/downloads/" + encodeURIComponent(id));
      schedulePoll(0);
    } catch (f) {
      if (d) d.cancelError = true;
      err.textContent = describe(f);
    } finally {
      button.disabled = false;
    }
  }

  function clearFinished() {
    for (const [id, d] of Array.from(state.downloads.entries())) if (d.finished) state.downloads.delete(id);
    renderActive();
  }

  // ---------------------------------------------------------------------------------------
  // History
  // ---------------------------------------------------------------------------------------

  async function loadHistory(index) {
    const generation = state.generation;
    const h = state.history;
    if (index === 0) h.cursors = [null];
    h.index = Math.max(0, Math.min(index, h.cursors.length - 1));
    const cursor = h.cursors[h.index];
    const query = new URLSearchParams();
    query.set("download_history", "");
    query.set("limit", String(HISTORY_PAGE));
    if (cursor) query.set("cursor", cursor);
    const here = $("history-here").checked && state.dir.length > 0;
    const base = here ? urlPath(state.dir) : "/";
    setText("history-error", "");
    try {
      const body = await apiJson("GET", base + "?" + query.toString());
      if (generation !== state.generation) return;
      const items = Array.isArray(body.history) ? body.history : [];
      const next = typeof body.next_cursor === "string" ? body.next_cursor : null;
      h.cursors.length = h.index + 1;
      if (next) h.cursors.push(next);
      renderHistory(items);
    } catch (f) {
      if (generation !== state.generation) return;
      $("history-list").replaceChildren();
      $("history-empty").hidden = true;
      setText("history-error", describe(f));
    }
  }

  function renderHistory(items) {
    const list = $("history-list");
    list.replaceChildren();
    for (const item of items) list.appendChild(historyRow(item));
    const h = state.history;
    $("history-empty").hidden = items.length > 0;
    $("history-newer").disabled = h.index === 0;
    $("history-older").disabled = h.cursors.length <= h.index + 1;
    setText("history-page", h.index > 0 || h.cursors.length > 1 ? "Page " + (h.index + 1) : "");
  }

  function historyRow(item) {
    const status = String(item.status || "");
    const li = el("li", { class: "history-item", "data-testid": "history-row" });
    li.dataset.id = String(item.id || "");
    li.dataset.status = status;
    li.dataset.filename = String(item.filename || "");
    const line = el("div", { class: "line" });
    line.appendChild(el("span", { class: "name" }, item.filename || "(no name)"));
    line.appendChild(el("span", { class: "badge " + status }, status));
    li.appendChild(line);

    const meta = el("div", { class: "meta" });
    const dir = String(item.directory || "");
    meta.appendChild(document.createTextNode("in "));
    meta.appendChild(el("a", { href: hashFor(splitPath(dir)) }, "/" + dir));
    const bits = [];
    if (item.total_bytes !== null && item.total_bytes !== undefined) bits.push(formatBytes(item.total_bytes));
    if (item.start_time) bits.push(formatTime(item.start_time));
    if (item.start_time && item.end_time) bits.push("took " + formatDuration(Number(item.end_time) - Number(item.start_time)));
    if (bits.length) meta.appendChild(document.createTextNode(" · " + bits.join(" · ")));
    li.appendChild(meta);
    if (item.url) li.appendChild(el("div", { class: "url" }, item.url));
    if (status === "failed" || status === "cancelled" || item.error) {
      const reason = item.error
        ? codeTitle(String(item.error)) + " (" + item.error + ")" + (item.message ? ": " + sentence(item.message) : ".")
        : sentence(item.message || (status === "cancelled" ? "Cancelled" : "Failed"));
      li.appendChild(el("div", { class: "reason", "data-testid": "history-reason" }, reason));
    }
    return li;
  }

  // ---------------------------------------------------------------------------------------
  // Bandwidth usage
  // ---------------------------------------------------------------------------------------

  async function loadUsage() {
    const generation = state.generation;
    setText("usage-error", "");
    try {
      const u = await apiJson("GET", "/api/download/usage");
      if (generation !== state.generation) return;
      const sent = Number(u.bytes_sent) || 0;
      const quota = u.quota_bytes === null || u.quota_bytes === undefined ? null : Number(u.quota_bytes);
      const remaining = u.remaining_bytes === null || u.remaining_bytes === undefined ? null : Number(u.remaining_bytes);
      const sentNode = $("usage-sent");
      sentNode.textContent = formatBytes(sent);
      sentNode.title = formatExact(sent);
      sentNode.dataset.bytes = String(sent);
      setText("usage-quota", quota === null ? "none" : formatBytes(quota));
      setText("usage-remaining", remaining === null ? "unlimited" : formatBytes(remaining));
      const bar = $("usage-bar");
      if (quota) {
        const pct = Math.min(100, (sent * 100) / quota);
        bar.value = pct;
        bar.dataset.percent = String(Math.floor(pct));
        bar.setAttribute("aria-label", "Quota used: " + Math.floor(pct) + " %");
        bar.hidden = false;
      } else {
        bar.hidden = true;
      }
      if (u.principal) setText("session-info", "Signed in as " + u.principal);
    } catch (f) {
      if (generation !== state.generation) return;
      setText("usage-error", describe(f));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------------------------

  function init() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout-button").addEventListener("click", () => signOut(""));
    $("goto-form").addEventListener("submit", gotoFolder);
    $("refresh-button").addEventListener("click", () => loadListing());
    $("listing-prev").addEventListener("click", () => {
      if (state.listing.index > 0) {
        state.listing.index--;
        loadListing();
      }
    });
    $("listing-next").addEventListener("click", () => {
      if (state.listing.cursors.length > state.listing.index + 1) {
        state.listing.index++;
        loadListing();
      }
    });
    $("listing-limit").addEventListener("change", () => {
      state.listing.cursors = [null];
      state.listing.index = 0;
      loadListing();
    });
    $("select-all").addEventListener("change", selectAll);
    $("clear-selection").addEventListener("click", clearSelection);
    $("zip-button").addEventListener("click", prepareZip);
    $("zip-confirm-button").addEventListener("click", downloadPrepared);
    $("zip-cancel-button").addEventListener("click", () => {
      hidePrepared();
      $("zip-button").focus();
    });
    $("remote-form").addEventListener("submit", startRemote);
    $("active-clear").addEventListener("click", clearFinished);
    $("history-refresh").addEventListener("click", () => loadHistory(0));
    $("history-here").addEventListener("change", () => loadHistory(0));
    $("history-newer").addEventListener("click", () => loadHistory(state.history.index - 1));
    $("history-older").addEventListener("click", () => loadHistory(state.history.index + 1));
    $("usage-refresh").addEventListener("click", loadUsage);
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.token) schedulePoll(0);
    });
    setupDropZone();
    updateSelectionUi();

    const saved = readStoredToken();
    if (saved) {
      verifyToken(saved).then((result) => {
        if (result.ok) startSession(saved, result.notice);
        else {
          forgetToken();
          setText("signin-error", "The saved session is no longer valid: " + result.message);
        }
      });
    } else {
      $("token-input").focus();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
