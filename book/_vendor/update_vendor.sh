#!/usr/bin/env bash
# Refresh the vendored JavaScript of the offline book from the npm registry (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent mathjax@3.2.2 requirejs@2.3.8 @jupyter-widgets/html-manager@1.0.15 >/dev/null
for f in *.tgz; do mkdir -p "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
mj=mathjax-3.2.2/package
rm -rf "$here/mathjax" "$here/widgets"
mkdir -p "$here/mathjax/output/chtml/fonts" "$here/widgets"
cp "$mj/es5/tex-chtml-full.js" "$mj/LICENSE" "$here/mathjax/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$here/mathjax/output/chtml/fonts/"
cp requirejs-2.3.8/package/require.js "$here/widgets/"
cp jupyter-widgets-html-manager-1.0.15/package/dist/embed-amd.js "$here/widgets/"
du -sh "$here"
