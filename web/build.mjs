// Bundles src/main.js (Cornerstone3D core + tools, fast-png) into one minified script for the service's static
// folder, and writes the licence texts of every package that ends up in it (THIRD_PARTY_NOTICES.txt).
// Run through `npm ci && npm run build` (scripts/build-viewer.sh, `make viewer`); the output is committed, so a
// Python installation serves the viewer without Node.
import { build } from "esbuild";
import { readFileSync, writeFileSync, existsSync, readdirSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, "../src/radiolens/serve/http/static/app");
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: [join(here, "src/main.js")],
  bundle: true, minify: true, format: "iife", target: ["es2020"], platform: "browser",
  outfile: join(out, "viewer.js"), metafile: true, legalComments: "none", sourcemap: false,
  logLevel: "warning",
  alias: { xmlbuilder2: join(here, "src/stubs/xmlbuilder2.js") },
});

// Every package with a module in the bundle, with its licence file.
const packages = new Map();
for (const input of Object.keys(result.metafile.outputs[Object.keys(result.metafile.outputs)[0]].inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (!m || packages.has(m[1])) continue;
  const dir = join(here, "node_modules", m[1]);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^(licen[sc]e|copying)(\.|$)/i.test(f));
  packages.set(m[1], { version: pkg.version, license: pkg.license || "(see text)",
    text: file ? readFileSync(join(dir, file), "utf8").trim() : null });
}
const names = [...packages.keys()].sort();
let notices = "Third-party software bundled in viewer.js (built from web/ by esbuild; versions from web/package-lock.json)\n\n";
for (const name of names) notices += `- ${name} ${packages.get(name).version}: ${packages.get(name).license}\n`;
for (const name of names) {
  const p = packages.get(name);
  notices += `\n${"=".repeat(78)}\n${name} ${p.version} (${p.license})\n${"=".repeat(78)}\n`;
  notices += (p.text || `No licence file in the package; its package.json states ${p.license}.`) + "\n";
}
writeFileSync(join(out, "THIRD_PARTY_NOTICES.txt"), notices);
const size = readFileSync(join(out, "viewer.js")).length;
console.log(`viewer.js ${(size / 1024).toFixed(0)} KiB; ${names.length} bundled packages: ${names.join(", ")}`);
if (!existsSync(join(out, "viewer.js"))) process.exit(1);
