#!/bin/sh
# Rebuilds ../plotly-hub.min.js from the exact versions in package-lock.json:
# the same input always gives the same bytes. Needs node and npm (the hub itself
# does not); node_modules/ stays out of git.
set -eu
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund
version=$(node -p "require('plotly.js/package.json').version")
banner="/**
* plotly.js v$version, partial bundle: scatter, bar, contour, heatmap, parcoords (strict)
* Copyright 2012-2026, Plotly, Inc.
* All rights reserved.
* Licensed under the MIT license
*/"
# The options plotly.js's own esbuild-config.js builds its dist bundles with,
# less the plugins none of these traces need. The one CSS file in reach is
# maplibre's, required only by map subplots: empty, not a second output file.
./node_modules/.bin/esbuild index.js \
    --bundle --minify --format=iife --global-name=Plotly --target=es2016 \
    --define:global=window --define:define.amd=false --loader:.css=empty \
    --legal-comments=eof --banner:js="$banner" \
    --log-level=warning --outfile=../plotly-hub.min.js
