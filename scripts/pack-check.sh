#!/usr/bin/env bash
# What a user installs from npm, proven here: packs the main package and the linux-x64-gnu binary package
# (npm/linux-x64-gnu plus the built addon, as the release workflow assembles it), installs both tarballs into an
# empty directory with no cargo or rustc on PATH, and there runs `npx vtc-r1 demo`, an ESM import and a CJS
# require of the API. Needs a build (`npm run build`) and the npm registry for the package's dependencies.
# Usage: bash scripts/pack-check.sh [--keep]   (--keep leaves the scratch directory and prints its path)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
triple=linux-x64-gnu
addon=vtc-r1.$triple.node

if [[ "$(node -p 'process.platform + "-" + process.arch')" != linux-x64 ]]; then
  echo "pack-check: checks the $triple package, so it runs on linux x64 only" >&2
  exit 2
fi
for built in "$addon" dist/index.js dist/cli/main.js; do
  [[ -e $built ]] || { echo "pack-check: $built is missing; run \`npm run build\` first" >&2; exit 1; }
done

work=$(mktemp -d)
if [[ ${1:-} == --keep ]]; then echo "pack-check: scratch directory $work"; else trap 'rm -rf "$work"' EXIT; fi

# 1. Pack. Scripts are skipped: `prepare` would rebuild from source, which is what users must not need.
mkdir "$work/$triple"
cp "npm/$triple/package.json" "npm/$triple/README.md" "$addon" "$work/$triple/"
pack() { # dir -> prints the tarball's path; lists its size and checks its contents
  local json
  json=$(cd "$1" && npm pack --ignore-scripts --json --pack-destination "$work" 2>/dev/null)
  node -e '
    const [p] = JSON.parse(process.argv[1])
    const mb = (n) => (n / 1e6).toFixed(2) + " MB"
    console.error(`${p.filename}: ${mb(p.size)} packed, ${mb(p.unpackedSize)} unpacked, ${p.entryCount} files`)
    // Users get the compiled API, the CLI, fonts, benchmark data and the addon; never sources, tests or builds.
    const banned = /^(crate|src|__test__|bench|scripts|npm|node_modules|\.ci|\.github)\/|\.tsbuildinfo$|^vtc-r1\..*\.node$/
    const bad = p.files.map((f) => f.path).filter((f) => banned.test(f) && !(p.name !== "vtc-r1" && f.endsWith(".node")))
    if (bad.length) { console.error(`pack-check: ${p.filename} holds files users do not need: ${bad.join(", ")}`); process.exit(1) }
    console.log(p.filename)' "$json"
}
main_tgz=$work/$(pack "$root")
addon_tgz=$work/$(pack "$work/$triple")

# 2. A PATH without cargo or rustc: every directory that holds either is dropped.
clean_path=
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do
  [[ -x $d/cargo || -x $d/rustc ]] && continue
  clean_path=${clean_path:+$clean_path:}$d
done
run() { (cd "$work/app" && env PATH="$clean_path" "$@"); }
mkdir "$work/app"
run sh -c '! command -v cargo && ! command -v rustc' > /dev/null || { echo "pack-check: cargo or rustc is still on PATH" >&2; exit 1; }

# 3. Install both tarballs as a user would, then use them.
run npm init -y > /dev/null
run npm install --no-audit --no-fund --loglevel=error "$main_tgz" "$addon_tgz" > /dev/null
echo "installed into $work/app with no cargo or rustc on PATH"
run npx --no vtc-r1 demo --out demo-pages | tail -n 4
ls "$work/app/demo-pages"/*.png > /dev/null
run node --input-type=module -e "
  import { renderText, loadModel } from 'vtc-r1'
  const { pages } = await renderText('An ESM import renders a page.')
  if (typeof loadModel !== 'function' || pages.length !== 1) throw new Error('ESM import: unexpected API')
  console.log('ESM import: ok (' + pages[0].width + 'x' + pages[0].height + ' page)')"
run node -e "
  const vtc = require('vtc-r1')
  if (typeof vtc.renderText !== 'function' || typeof vtc.loadModel !== 'function') throw new Error('CJS require: unexpected API')
  vtc.renderText('A CJS require renders a page.').then(({ pages }) => console.log('CJS require: ok (' + pages.length + ' page)'))"
echo "pack-check: ok"
