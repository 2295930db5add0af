#!/usr/bin/env bash
# Renders the Python package's API page (the docstrings of hypergrad, hypergrad.estimators)
# with pdoc into $1 (default target/python-docs), and fails if a public function or estimator
# is missing from it. Needs the package installed (`pip install ./python`) and pdoc
# (`pip install pdoc`); PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/python-docs}"
py="${PYTHON:-python3}"
rm -rf "$out"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# From outside the repository, so that the installed package (with its extension) is the one
# documented, not python/hypergrad/ without it. (pdoc warns that the estimators re-exported
# lazily by hypergrad do not resolve there: they are documented in hypergrad.estimators.)
(cd / && "$py" -m pdoc --docformat numpy --no-search -o "$out" hypergrad hypergrad.estimators 2>&1 \
    | grep -v "in hypergrad.__all__, but it does not resolve" || true)
for name in hypergradient run info LassoHO ElasticNetHO WeightedLassoHO HyperCleaner \
            holdout_indices cv_folds; do
    if ! grep -q "id=\"$name\"" "$out"/hypergrad.html "$out"/hypergrad/estimators.html; then
        echo "python_docs: $name is missing from the rendered page" >&2
        exit 1
    fi
done
echo "python_docs: $out/index.html"
