#!/usr/bin/env bash
# usage: emulated_cpu_test.sh QEMU SMOKE NATIVE_SMOKE MODEL
# Under an emulated Nehalem (SSE4.2, no AVX) the all-variants build must pick
# the sse42 variant and generate; a native-only build must die there, which
# shows that the check can fail.
set -u
qemu=$1 smoke=$2 native=$3 model=$4
[ -x "$qemu" ] || { echo "FAIL: qemu-x86_64 not found (Debian: apt-get install qemu-user)"; exit 1; }
[ -f "$model" ] || { echo "FAIL: test model not found: $model"; exit 1; }
[ -x "$native" ] || { echo "FAIL: no native-only build given (LLMODEL_NATIVE_SMOKE=$native)"; exit 1; }

out=$("$qemu" -cpu Nehalem "$smoke" "$model" 2>&1); rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: the default build exited with $rc under Nehalem"; exit 1; }
echo "$out" | grep -q '^cpu_variant=sse42$' || { echo "FAIL: expected the sse42 variant under Nehalem"; exit 1; }
echo "$out" | grep -q '^n_generated=6$' || { echo "FAIL: expected 6 generated tokens"; exit 1; }

out=$("$qemu" -cpu Nehalem "$native" "$model" 2>&1); rc=$?
echo "native-only build: exit $rc"
echo "$out" | tail -3
if [ $rc -eq 0 ]; then echo "FAIL: the native-only build ran under Nehalem, so this test proves nothing"; exit 1; fi
if [ $rc -ne 132 ] && ! echo "$out" | grep -qi "illegal instruction"; then
    echo "FAIL: the native-only build failed, but not with an illegal instruction"; exit 1
fi
echo "PASS: all-variants build runs on Nehalem; native-only build dies with an illegal instruction"
