# Shared by scripts/serve and scripts/test: makes .venv and installs the project into it when needed.
# Sourced, not run. Re-installs only when pyproject.toml changed since the last install.

ensure_venv() {
    local extras="$1"  # "" or "[test]"
    local python="${PYTHON:-python3}"
    local stamp=".venv/.installed$(echo "$extras" | tr -d '[]')-$(cat pyproject.toml setup.py src/keyplane/store/_tokens.c | sha256sum | cut -c1-16)"
    if [ ! -x .venv/bin/python ]; then
        echo "keyplane: creating .venv with $($python --version)" >&2
        "$python" -m venv .venv
    fi
    if [ ! -f "$stamp" ]; then
        echo "keyplane: installing keyplane$extras into .venv" >&2
        .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
        .venv/bin/python -m pip install --quiet -e ".$extras"
        touch "$stamp"
    fi
}
