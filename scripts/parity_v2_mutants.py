#!/usr/bin/env python3
"""Show that the v2 parity test (test/test_parity_v2.py) fails on the bugs issue 21 names.

    .venv/bin/python scripts/parity_v2_mutants.py            # baseline + every mutant
    .venv/bin/python scripts/parity_v2_mutants.py --only age_bias_sign_flipped

Each mutant is an exact text replacement in a *copy* of ``sparsebev_core`` and the test (in a
temporary folder; the working tree is never touched). A replacement whose original text is no
longer in the code is an error, so a stale mutant cannot pass silently. For each mutant the
parity test runs in the copy (``PYTHONPATH`` points there first; checked) and must fail; the
script prints the failing tests and the first quantity out of tolerance, and exits non-zero if
the baseline fails or a mutant passes. Runtime: the parity test's, once per mutant (about
3 CPU-minutes each).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = 'test/test_parity_v2.py'

# name: (file, [(original, replacement), ...], what the bug is)
MUTANTS: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    'warp_order_swapped': (
        'sparsebev_core/model/recurrent_state.py',
        [('    center = torch.cat([center[..., 0:2] + velocity * dt, center[..., 2:3]], dim=-1)\n',
          '    # mutant: no velocity step before the ego transform\n'),
         ('    out[..., 0:3] = (moved[..., :3, 0] - lo) / span\n',
          '    moved_center = torch.cat([moved[..., 0:2, 0] + velocity * dt, moved[..., 2:3, 0]], dim=-1)\n'
          '    out[..., 0:3] = (moved_center - lo) / span   # mutant: velocity step after it\n')],
        'ego transform first, then x, y += v dt with the (unrotated) previous-frame velocity'),
    'age_bias_sign_flipped': (
        'sparsebev_core/model/attention.py',
        [('        return (negative_age[:, None, :, :] * tau[..., None]).flatten(0, 1)',
          '        return (-negative_age[:, None, :, :] * tau[..., None]).flatten(0, 1)')],
        'memory attention bias +tau * age instead of -tau * age'),
    'gate_on_memory': (
        'sparsebev_core/model/recurrent_head.py',
        [('                used = self.passes_time_gate(motion)                                          # [B]\n',
          '                used = torch.ones_like(self.passes_time_gate(motion))      # mutant\n'
          '                if not bool(self.passes_time_gate(motion).all()):\n'
          '                    memory_feat = memory_bbox = None                        # mutant\n')],
        'the 2 s gate drops the memory and keeps the propagated queries'),
    'six_layers_at_inference': (
        'sparsebev_core/model/recurrent_decoder.py',
        [('        return self.num_layers if self.training else self.inference_layers',
          '        return self.num_layers                                    # mutant')],
        'all 6 decoder layers run at inference'),
}


def make_copy(workdir: Path) -> None:
    shutil.copytree(ROOT / 'sparsebev_core', workdir / 'sparsebev_core',
                    ignore=shutil.ignore_patterns('__pycache__', '*.so', 'build'))
    (workdir / 'test').mkdir()
    shutil.copy2(ROOT / TEST, workdir / TEST)
    for helper in ('conftest.py', 'parity_helpers.py'):
        shutil.copy2(ROOT / 'test' / helper, workdir / 'test' / helper)
    shutil.copytree(ROOT / 'test' / 'parity_v2', workdir / 'test' / 'parity_v2')


def mutate(workdir: Path, name: str) -> None:
    path, edits, _ = MUTANTS[name]
    target = workdir / path
    text = target.read_text()
    for original, replacement in edits:
        if text.count(original) != 1:
            raise SystemExit(f'mutant {name}: the original text is not in {path} exactly once '
                             f'(the code changed: update the mutant)\n{original}')
        text = text.replace(original, replacement)
    target.write_text(text)


def run_test(workdir: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(workdir) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    probe = subprocess.run([sys.executable, '-c', 'import sparsebev_core; print(sparsebev_core.__file__)'],
                           cwd=workdir, env=env, capture_output=True, text=True, check=True)
    if not probe.stdout.strip().startswith(str(workdir)):
        raise SystemExit(f'the copy is not the imported sparsebev_core: {probe.stdout.strip()}')
    proc = subprocess.run([sys.executable, '-m', 'pytest', TEST, '-q', '-rf', '-p', 'no:cacheprovider'],
                          cwd=workdir, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def summary(output: str) -> str:
    failed = [line for line in output.splitlines() if line.startswith('FAILED')]
    first = next((line[1:].strip() for line in output.splitlines()       # assertion messages
                  if line.startswith('E ') and re.search(r'FAIL\b|assert', line)), '')
    last = output.strip().splitlines()[-1] if output.strip() else ''
    return '\n'.join(['  ' + f[:200] for f in failed] + ([f'  first: {first[:300]}'] if first else [])
                     + [f'  {last}'])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', action='append', choices=sorted(MUTANTS), help='run this mutant only')
    parser.add_argument('--skip-baseline', action='store_true', help='do not run the unmutated test first')
    args = parser.parse_args()
    names = args.only or list(MUTANTS)
    ok = True
    for name in ([] if args.skip_baseline else ['baseline']) + names:
        with tempfile.TemporaryDirectory(prefix=f'parity_v2_{name}_') as tmp:
            workdir = Path(tmp)
            make_copy(workdir)
            if name != 'baseline':
                mutate(workdir, name)
            code, output = run_test(workdir)
        expected_fail = name != 'baseline'
        good = (code != 0) == expected_fail
        ok &= good
        what = 'unmutated code' if name == 'baseline' else MUTANTS[name][2]
        verdict = ('test fails, as it must' if expected_fail else 'test passes') if good else \
            ('TEST PASSES ON THE BUG' if expected_fail else 'BASELINE FAILS')
        print(f'{name} ({what}): {verdict}\n{summary(output)}', flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
