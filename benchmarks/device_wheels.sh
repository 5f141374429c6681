# Sourced by the GPU scripts (gpu_speed.sh, gpu_checks.sh): packages the lent GPU machine's image lacks (MONAI,
# pytorch-ignite, nibabel, fire, termcolor) travel as wheels in .whl/ and are
# installed into /tmp/site, which goes first on PYTHONPATH.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
