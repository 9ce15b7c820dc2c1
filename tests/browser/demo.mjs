// Drives csp-server's web demo page in Debian's headless Chromium (playwright-core, no bundled
// browser) and checks what a user would see: the model list, boxes and labels for a detector,
// top classes for a classifier, the server's error for a bad file, the API-key flow, keyboard
// reach, no horizontal overflow on a phone-sized screen. Saves screenshots to OUT_DIR.
//
//   node tests/browser/demo.mjs BASE_URL OUT_DIR [--image=FILE] [--api-key=KEY]
//                               [--detector=det] [--classifier=cls]
//
// With --api-key the server must require that key: the page is first seen refusing (401), then
// working once the key is typed. Exits 0 when every check passed, 1 with the reason otherwise.

import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Generous: several servers and builds may share two cores. */
const STEP_TIMEOUT_MS = 45_000;
/** The lowest score threshold: random-weight test models score low. */
const LOW_SCORE = "0.001";

function parseArgs(argv) {
  const positional = [];
  const options = { detector: "det", classifier: "cls", image: null, apiKey: null };
  for (const arg of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!m) positional.push(arg);
    else if (m[1] === "image") options.image = m[2];
    else if (m[1] === "api-key") options.apiKey = m[2];
    else if (m[1] === "detector") options.detector = m[2];
    else if (m[1] === "classifier") options.classifier = m[2];
    else throw new Error(`unknown option --${m[1]}`);
  }
  if (positional.length !== 2) {
    throw new Error("usage: node demo.mjs BASE_URL OUT_DIR [--image=FILE] [--api-key=KEY] [--detector=N] [--classifier=N]");
  }
  return { base: positional[0].replace(/\/+$/, ""), out: positional[1], ...options };
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function log(message) {
  console.log(`[demo] ${message}`);
}

/** A fresh Chromium profile for each browser, removed afterwards. */
async function withBrowser(contextOptions, body) {
  const profile = await mkdtemp(join(tmpdir(), "csp-demo-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    ...contextOptions,
  });
  try {
    return await body(context);
  } finally {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true });
  }
}

/** A page that fails the run on script errors, CSP violations and requests to other origins. */
async function openPage(context, base, problems) {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("pageerror", (e) => problems.push(`uncaught script error: ${e.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy|SyntaxError|TypeError/.test(msg.text())) {
      problems.push(`console: ${msg.text()}`);
    }
  });
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith("blob:") && !url.startsWith("data:")) {
      problems.push(`request to another origin: ${url}`);
    }
  });
  return page;
}

async function waitState(page, state) {
  await page.waitForSelector(`body[data-state="${state}"]`);
}

/** The image to upload: the given file, or a drawing made by the browser itself. */
async function testImage(page, path) {
  if (path) return { name: basename(path), mimeType: mimeOf(path), buffer: await readFile(path) };
  const dataUrl = await page.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 640;
    c.height = 480;
    const g = c.getContext("2d");
    const sky = g.createLinearGradient(0, 0, 0, 480);
    sky.addColorStop(0, "#7fb2e5");
    sky.addColorStop(1, "#e8d7b0");
    g.fillStyle = sky;
    g.fillRect(0, 0, 640, 480);
    g.fillStyle = "#3f6d3a";
    g.fillRect(0, 330, 640, 150);
    g.fillStyle = "#8c2f2f";
    g.fillRect(120, 220, 160, 120);
    g.fillStyle = "#222";
    g.beginPath();
    g.arc(460, 260, 70, 0, 2 * Math.PI);
    g.fill();
    return c.toDataURL("image/png");
  });
  return { name: "drawing.png", mimeType: "image/png", buffer: Buffer.from(dataUrl.split(",")[1], "base64") };
}

function mimeOf(path) {
  const ext = path.toLowerCase().split(".").pop();
  return { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp", bmp: "image/bmp" }[ext] ||
    "application/octet-stream";
}

/** Every visible form control has an accessible name from a label or ARIA. */
async function checkLabels(page) {
  const unlabelled = await page.evaluate(() => {
    const missing = [];
    for (const el of document.querySelectorAll("input, select, textarea, button")) {
      const named =
        (el.labels && el.labels.length > 0) ||
        el.getAttribute("aria-label") ||
        el.getAttribute("aria-labelledby") ||
        (el.tagName === "BUTTON" && el.textContent.trim());
      if (!named) missing.push(el.id || el.outerHTML.slice(0, 60));
    }
    return missing;
  });
  check(unlabelled.length === 0, `controls without a label: ${unlabelled.join(", ")}`);
  for (const name of ["Model", "API key", "Score threshold", "IoU threshold (NMS)"]) {
    check((await page.getByLabel(name, { exact: false }).count()) >= 1, `no control labelled "${name}"`);
  }
  check((await page.locator("[aria-live]").count()) >= 1, "no aria-live result region");
}

/** Tab reaches the drop zone's file input, and the zone shows that it has the focus. */
async function checkKeyboardReachesDropZone(page) {
  await page.locator("body").focus();
  for (let i = 0; i < 25; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(() => document.activeElement && document.activeElement.id === "file")) {
      const outline = await page.evaluate(() => getComputedStyle(document.getElementById("drop-zone")).outlineStyle);
      check(outline !== "none", "the drop zone shows no focus outline");
      return;
    }
  }
  throw new Error("check failed: Tab never reaches the drop zone's file input");
}

/** What the page shows for the detector: list items and boxes drawn on the overlay. */
async function detectionState(page) {
  return page.evaluate(() => {
    const items = [...document.querySelectorAll("#detections li")].map((li) => ({
      label: li.dataset.label,
      score: Number(li.dataset.score),
      classId: Number(li.dataset.classId),
      text: li.textContent,
    }));
    const canvas = document.getElementById("overlay");
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
    const timings = Object.fromEntries(
      [...document.querySelectorAll("#timings [data-timing]")].map((d) => [d.dataset.timing, d.querySelector("dd").textContent]),
    );
    return { items, boxes: Number(canvas.dataset.boxes), painted, timings, status: document.getElementById("status").textContent };
  });
}

async function runDetector(page, image, minScore) {
  await page.setInputFiles("#file", image);
  await waitState(page, "done");
  await page.waitForSelector("#detections li");
  const state = await detectionState(page);
  check(state.items.length > 0, "no detections listed");
  check(state.boxes === state.items.length, `${state.boxes} boxes drawn for ${state.items.length} detections`);
  check(state.painted > 100, `the overlay is (almost) empty: ${state.painted} painted pixels`);
  for (const item of state.items) {
    check(item.label && item.text.includes(item.label), `detection without a label: ${JSON.stringify(item)}`);
    check(item.score >= minScore && item.score <= 1, `score ${item.score} outside [${minScore}, 1]`);
  }
  for (const key of ["queue", "inference", "total"]) {
    check(/^\d+(\.\d+)? ms$/.test(state.timings[key] || ""), `timing ${key} missing: ${JSON.stringify(state.timings)}`);
  }
  return state;
}

async function desktop(opts, image, problems) {
  return withBrowser({ viewport: { width: 1280, height: 900 } }, async (context) => {
    const page = await openPage(context, opts.base, problems);
    await page.goto(`${opts.base}/?model=${encodeURIComponent(opts.detector)}&score=${LOW_SCORE}`);
    await waitState(page, "ready");
    const options = await page.$$eval("#model option", (os) => os.map((o) => ({ value: o.value, text: o.textContent })));
    for (const name of [opts.detector, opts.classifier]) {
      check(options.some((o) => o.value === name), `model ${name} not offered: ${JSON.stringify(options)}`);
    }
    check(options.find((o) => o.value === opts.detector).text.includes("detector"), "the picker does not show the task");
    check(/\d+\u00d7\d+/.test(options[0].text), "the picker does not show the input size");
    check((await page.inputValue("#model")) === opts.detector, "?model= did not pick the detector");
    check((await page.inputValue("#score")) === LOW_SCORE, "?score= did not set the score threshold");
    await checkLabels(page);
    await checkKeyboardReachesDropZone(page);
    const img = await testImage(page, opts.image);

    if (opts.apiKey) {
      // Without the key the server refuses, and the page says so with the server's message.
      await page.setInputFiles("#file", img);
      await waitState(page, "error");
      const error = await page.textContent("#error");
      check(error.includes("401") && error.includes("API key"), `no 401 shown without the key: ${error}`);
      await page.fill("#api-key", opts.apiKey);
      await page.press("#api-key", "Tab"); // `change` fires: the page re-runs with the key
      await waitState(page, "done");
      check(await page.isHidden("#error"), "the error stays shown after a successful run");
    }

    const low = await runDetector(page, img, Number(LOW_SCORE));
    log(`detector: ${low.items.length} detections at score >= ${LOW_SCORE}; ${low.status}`);
    await page.screenshot({ path: join(opts.out, "desktop-detect.png"), fullPage: true });

    // Moving the threshold re-runs the image with it (debounced) and never adds detections.
    const rerun = page.waitForRequest((r) => r.method() === "POST" && r.url().includes("score_threshold=0.3"));
    await page.fill("#score", "0.3");
    await rerun;
    await waitState(page, "done");
    const high = await detectionState(page);
    check(high.items.length <= low.items.length, `more detections at 0.3 (${high.items.length}) than at 0.001`);
    check(high.items.every((i) => i.score >= 0.3), "a detection below the new threshold is listed");
    check(high.boxes === high.items.length, "boxes and list disagree after the re-run");
    check(new URL(page.url()).searchParams.get("score") === "0.3", "the URL does not carry the new threshold");
    log(`detector: ${high.items.length} detections at score >= 0.3`);

    // The classifier: top-k classes with score bars, re-run when top-k changes.
    await page.selectOption("#model", opts.classifier);
    await waitState(page, "done");
    await page.waitForSelector("#classes li");
    check(await page.isHidden("#score"), "the score threshold is shown for a classifier");
    const classesAt = async () =>
      page.$$eval("#classes li", (lis) =>
        lis.map((li) => ({ label: li.dataset.label, score: Number(li.dataset.score), bar: li.querySelector(".fill").style.width })),
      );
    let classes = await classesAt();
    check(classes.length === 5, `expected the default top 5 classes, got ${classes.length}`);
    for (let i = 0; i < classes.length; i++) {
      check(classes[i].label, "a class without a label");
      check(classes[i].score >= 0 && classes[i].score <= 1, `class score ${classes[i].score}`);
      check(/%$/.test(classes[i].bar), "a class without a score bar");
      if (i > 0) check(classes[i - 1].score >= classes[i].score, "classes are not sorted by score");
    }
    const topK = page.waitForRequest((r) => r.method() === "POST" && r.url().includes("top_k=3"));
    await page.fill("#top-k", "3");
    await topK;
    await page.waitForFunction(() => document.querySelectorAll("#classes li").length === 3);
    await waitState(page, "done");
    classes = await classesAt();
    log(`classifier: ${classes.map((c) => `${c.label} ${c.score.toFixed(3)}`).join(", ")}`);
    await page.screenshot({ path: join(opts.out, "desktop-classify.png"), fullPage: true });

    // A text file: the page shows the server's own JSON error message and status.
    const notImage = { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("these are not pixels\n") };
    await page.setInputFiles("#file", notImage);
    await waitState(page, "error");
    const expected = await serverError(opts, `/v1/models/${opts.classifier}/classify?top_k=3`, notImage.buffer);
    const shown = await page.textContent("#error");
    check(await page.isVisible("#error[role=alert]"), "the error is not shown in an alert");
    check(shown.includes(String(expected.status)), `status ${expected.status} not shown: ${shown}`);
    check(shown.includes(expected.body.error), `the server's message "${expected.body.error}" not shown: ${shown}`);
    check((await page.locator("#classes li").count()) === 0, "stale classes stay listed after an error");
    log(`error shown: ${shown}`);
    await page.screenshot({ path: join(opts.out, "desktop-error.png"), fullPage: true });
  });
}

/** What the API itself answers for a body (the page must show this). */
async function serverError(opts, path, body) {
  const headers = { "content-type": "application/octet-stream" };
  if (opts.apiKey) headers.authorization = `Bearer ${opts.apiKey}`;
  const response = await fetch(`${opts.base}${path}`, { method: "POST", headers, body });
  const json = await response.json();
  check(!response.ok && typeof json.error === "string", `the API accepted a text file: ${JSON.stringify(json)}`);
  return { status: response.status, body: json };
}

async function phone(opts, image, problems) {
  // A phone in dark mode: the screenshots then show both colour schemes.
  const device = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: "dark" };
  return withBrowser(device, async (context) => {
    const page = await openPage(context, opts.base, problems);
    await page.goto(`${opts.base}/?model=${encodeURIComponent(opts.detector)}&score=${LOW_SCORE}`);
    await waitState(page, "ready");
    if (opts.apiKey) await page.fill("#api-key", opts.apiKey);
    const img = await testImage(page, opts.image);
    const state = await runDetector(page, img, Number(LOW_SCORE));
    log(`phone: ${state.items.length} detections`);
    const layout = await page.evaluate(() => {
      const controls = document.querySelector(".controls").getBoundingClientRect();
      const results = document.querySelector(".results").getBoundingClientRect();
      const preview = document.getElementById("preview").getBoundingClientRect();
      return {
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: window.innerWidth,
        stacked: results.top >= controls.bottom - 1 && Math.abs(results.left - controls.left) < 2,
        previewFits: preview.right <= window.innerWidth + 0.5,
        coarse: window.matchMedia("(pointer: coarse)").matches,
        captureShown: !document.getElementById("camera-capture").hidden,
      };
    });
    check(layout.scrollWidth <= layout.innerWidth, `horizontal overflow: ${layout.scrollWidth} > ${layout.innerWidth}`);
    check(layout.stacked, "the phone layout is not a single column");
    check(layout.previewFits, "the image is wider than the screen");
    check(!layout.coarse || layout.captureShown, "no camera capture button on a touch screen");
    await page.screenshot({ path: join(opts.out, "phone-detect.png"), fullPage: true });
    return layout;
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  await mkdir(opts.out, { recursive: true });
  const problems = [];
  await desktop(opts, opts.image, problems);
  await phone(opts, opts.image, problems);
  check(problems.length === 0, `problems in the page:\n  ${problems.join("\n  ")}`);
  await writeFile(join(opts.out, "ok"), "all browser checks passed\n");
  log(`all checks passed; screenshots in ${opts.out}`);
}

main().catch((e) => {
  console.error(`[demo] FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
