// What the headless-Chromium tests share: the paths, playwright-core and the
// browser's launch. The servers they load pages from are started as the Node
// tests start them (tests/js/harness.mjs, tests/js/chat-cluster.mjs).
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, "..", "..");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const SHOTS = path.join(REPO_ROOT, "target", "screenshots");

/** `name` as `from` would import it, or null when it is not installed. */
export function load(from, name) {
  try {
    return createRequire(from)(name);
  } catch {
    return null;
  }
}

export const playwright = load(import.meta.url, "playwright-core");

/** Why the tests are skipped (RSIO_SKIP_BROWSER=1), or false. A missing part
 * fails them (scripts/setup installs it): each of `needs` is [ok, what to say]. */
export function skipReason(needs = []) {
  if (process.env.RSIO_SKIP_BROWSER === "1") return "RSIO_SKIP_BROWSER=1";
  if (!playwright) throw new Error("playwright-core is not installed (run scripts/setup, or npm ci in tests/browser)");
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (run scripts/setup: apt-get install chromium)`);
  for (const [ok, what] of needs) if (!ok) throw new Error(what);
  return false;
}

/** Debian's Chromium, headless, with the flags this machine's closed network needs. */
export function launchChromium() {
  return playwright.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: 30_000,
  });
}
