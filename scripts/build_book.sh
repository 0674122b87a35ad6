#!/usr/bin/env bash
# Build the Jupyter Book into _build/html with every Sphinx warning treated as an error.
#
# MathJax is served from the built site: the es5 folder of the npm package mathjax is copied to
# _build/mathjax_static/mathjax, which _config.yml adds to html_static_path. The npm download
# happens once; delete _build/mathjax_static to fetch it again.
set -euo pipefail
cd "$(dirname "$0")/.."

MATHJAX_VERSION="3.2.2"
static_dir="_build/mathjax_static/mathjax"
if [[ ! -f "$static_dir/tex-mml-chtml.js" ]]; then
    command -v npm >/dev/null || { echo "npm not found: install Node.js and npm to fetch MathJax $MATHJAX_VERSION" >&2; exit 1; }
    npm_dir="_build/npm"
    mkdir -p "$npm_dir"
    npm install --silent --no-audit --no-fund --prefix "$npm_dir" "mathjax@$MATHJAX_VERSION"
    rm -rf "$static_dir"
    mkdir -p "$(dirname "$static_dir")"
    cp -r "$npm_dir/node_modules/mathjax/es5" "$static_dir"
fi

jupyter-book build -W -n --keep-going .
