"""Every subcommand reports errors the same way: one ``sparsebev <cmd>: error: ...`` line on
stderr and exit code 1 for bad input, 2 for a usage error (ours or argparse's).

In-process through ``sparsebev_cli.cli.main(argv)``; one subprocess checks the real exit
status of ``python -m`` entry points."""
import subprocess
import sys
from pathlib import Path

import pytest

from sparsebev_cli.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_error_line(capsys, argv, code, words):
    got, lines = run(capsys, argv)
    assert got == code, (argv, got, lines)
    assert len(lines) == 1 and lines[0].startswith(f'sparsebev {argv[0]}: error: '), lines
    assert words in lines[0], lines


@pytest.mark.parametrize('argv, words', [
    (['train', '--preset', 'no_such_preset'], "unknown preset 'no_such_preset'"),
    (['eval', '--preset', 'tiny', '--checkpoint', 'missing.pth'], 'missing.pth'),
    (['viz', '--preset', 'tiny', '--checkpoint', 'missing.pth'], 'missing.pth'),
    (['timing', '--preset', 'tiny', '--device', 'no_such_device'], "unknown device 'no_such_device'"),
    (['convert-checkpoint', 'missing.pth', 'out.pth'], 'missing.pth'),
])
def test_bad_input_is_one_line_and_exit_code_1_in_core_commands(capsys, tmp_path, monkeypatch,
                                                                argv, words):
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(capsys, argv, 1, words)
    assert not (tmp_path / 'out.pth').exists()


def test_bad_input_in_demo_and_bag_commands(capsys, tmp_path):
    empty = tmp_path / 'not_a_dataset'
    empty.mkdir()
    assert_one_error_line(capsys, ['demo', '--nuscenes', str(empty), '--scene', 'scene-0001',
                                   '--out', str(tmp_path / 'out'), '--device', 'cpu'],
                          1, 'holds no v1.0-trainval or v1.0-mini tables')
    assert_one_error_line(capsys, ['nuscenes-to-bag', str(tmp_path / 'bag'), '--root', str(empty),
                                   '--scene', 'scene-0001'], 1, 'v1.0-mini does not exist')
    assert not (tmp_path / 'bag').exists()


def test_bad_replay_parameters_and_missing_data_are_one_line(capsys, tmp_path):
    """Probe row 12: bad -p YAML, a binary --params file, an unknown parameter, a missing
    dataset: one line naming what is wrong, exit 1, nothing written. (The input bag only has
    to exist: parameters are read before the bag is opened.)"""
    bag = tmp_path / 'bag'
    bag.mkdir()
    binary = tmp_path / 'params.yaml'
    binary.write_bytes(b'\x00\x01binary')
    out = str(tmp_path / 'out')
    assert_one_error_line(capsys, ['replay', str(bag), out, '-p', 'preset:=[unclosed'], 1,
                          '-p preset:=[unclosed: the value is not valid YAML')
    assert_one_error_line(capsys, ['replay', str(bag), out, '--params', str(binary)], 1,
                          f'parameter file {binary} is not valid YAML')
    assert_one_error_line(capsys, ['replay', str(bag), out, '-p', 'no_such:=1'], 1,
                          'unknown parameter(s) no_such')
    assert_one_error_line(capsys, ['train', '--preset', 'tiny', '--data', str(tmp_path / 'none'),
                                   '--device', 'cpu', '--work-dir', str(tmp_path / 'w')], 1,
                          'no nuScenes tables at')
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'w' / 'latest.pth').exists()


def test_a_future_preset_cannot_stream_and_says_so_in_one_line(capsys, tmp_path):
    """The *_future presets need frames from the future: replay (a stream) refuses them with a
    typed error before any weights are read, pointing to offline evaluation; so does the ONNX
    export (its graphs only serve a stream), before any file is written."""
    bag = tmp_path / 'bag'
    bag.mkdir()
    assert_one_error_line(capsys, ['replay', str(bag), str(tmp_path / 'out'), '-p',
                                   'preset:=vov99_dd3d_1600x640_trainval_future', '-p',
                                   f'checkpoint:={tmp_path / "X.pth"}'], 1,
                          'a stream cannot see the future')
    assert not (tmp_path / 'out').exists()
    pytest.importorskip('onnxruntime', reason="onnxruntime not installed (pip install -e '.[onnx]')")
    assert_one_error_line(capsys, ['export-onnx', '--preset', 'vov99_dd3d_1600x640_trainval_future',
                                   '--checkpoint', str(tmp_path / 'X.pth'), '--out',
                                   str(tmp_path / 'onnx')], 1, 'a stream cannot see the future')
    assert not (tmp_path / 'onnx').exists()


def test_usage_errors_are_exit_code_2(capsys, tmp_path):
    # ours (UsageError): one line
    assert_one_error_line(capsys, ['demo', '--nuscenes', str(tmp_path), '--out',
                                   str(tmp_path / 'out')], 2, '--scene is required')
    assert_one_error_line(capsys, ['convert-checkpoint', 'a.pth', 'b.pth', '--backbone-only'],
                          2, '--backbone-only needs --preset')
    # argparse's: a missing required option, conflicting options, an unknown command
    for argv in (['eval', '--preset', 'tiny'], ['train', '--preset', 'tiny', '--config', 'x.py'],
                 ['no-such-command']):
        code, lines = run(capsys, argv)
        assert code == 2 and lines and 'error:' in lines[-1], (argv, lines)


def test_help_and_the_table_of_subcommands(capsys):
    assert run(capsys, ['--help'])[0] == 0
    assert {'build-op', 'params-table', 'demo', 'replay', 'train'} <= set(SUBCOMMANDS)
    assert main(['params-table']) == 0
    assert '| `score_threshold` |' in capsys.readouterr().out


def test_python_m_entry_points_exit_with_the_same_codes(tmp_path):
    """The real process exit status (console script and the torchrun module)."""
    for module in ('sparsebev_cli.cli', 'sparsebev_core.engine.train'):
        argv = [sys.executable, '-m', module] + (['train'] if module.endswith('cli') else []) \
            + ['--preset', 'no_such_preset']
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1',
                                   'PATH': '/usr/bin:/bin'})
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (module, done.stderr)
        assert "unknown preset 'no_such_preset'" in lines[0]
