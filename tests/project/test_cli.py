"""The `vmkit` command as a user meets it: which cost model `compare` prices with, "did you
mean", exit codes, and every error of an assembly file (the command run in-process through
``vmkit.cli.main``; one case through a subprocess, for the real exit status)."""

import subprocess
import sys

import pytest

from vmkit.cli import ASM_MAX_ERRORS, EXIT_CODES, EXIT_CRASH, EXIT_INPUT, EXIT_MAX_STEPS, main


# --- compare: the same named model as `vmkit run` --------------------------------------------

def test_compare_prices_with_the_model_run_uses_and_names_it(capsys):
    """Does `vmkit compare` without --preset price with the monitors' own named model (the
    one `vmkit run` prints), and say which?"""
    from vmkit import guests
    from vmkit.vmm import CostModel, TrapAndEmulate, compare

    assert main(["compare", "hello", "--monitor", "te"]) == 0
    out = capsys.readouterr().out
    default = TrapAndEmulate(guests.build("hello")).costs
    assert default.name == CostModel.DEFAULT_PRESET == "p4-2006"
    assert f"cycles under {default.name}" in out
    assert "custom" not in out
    # the figures are p4-2006's, not those of the unnamed CostModel()
    assert out.strip() == compare(["hello"], monitors=["te"], costs="p4-2006").to_text()
    assert out.strip() != compare(["hello"], monitors=["te"], costs=CostModel()).to_text()


def test_compare_function_defaults_to_the_same_model():
    """Is compare()'s default the monitors' default, so that API and command agree?"""
    from vmkit.vmm import CostModel, compare

    assert compare(["hello"], monitors=["native"]).costs == CostModel.default()


def test_run_and_compare_help_name_the_default_model(capsys):
    from vmkit.vmm import CostModel

    assert main(["compare", "--help"]) == 0
    assert CostModel.DEFAULT_PRESET in capsys.readouterr().out


@pytest.mark.parametrize("argv, hint", [
    (["compare", "sycall"], "did you mean syscall?"),
    (["compare", "hello", "--monitor", "tee"], "did you mean te?"),
    (["compare", "hello", "--monitor", "hw-shadw"], "did you mean hw-shadow?"),
])
def test_compare_suggests_a_close_name(argv, hint, capsys):
    """Does a misspelt guest or monitor get a one-line "did you mean"?"""
    assert main(argv) == EXIT_INPUT
    err = capsys.readouterr().err
    assert hint in err
    assert len(err.strip().splitlines()) == 1, err


def test_compare_without_close_name_lists_the_choices(capsys):
    assert main(["compare", "zzzzzz"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "did you mean" not in err and "syscall" in err


# --- run: exit codes --------------------------------------------------------------------------

def test_run_stopped_by_max_steps_exits_3(capsys):
    """Is a run cut short by --max-steps a failure a script can see?"""
    assert main(["run", "hello", "--max-steps", "100"]) == EXIT_MAX_STEPS == 3
    captured = capsys.readouterr()
    assert "-- max_steps after 100 steps" in captured.out
    assert captured.err.strip() == ("vmkit run: the guest did not stop within --max-steps 100")


def test_run_to_the_end_exits_0(capsys):
    assert main(["run", "hello"]) == 0
    assert "-- poweroff" in capsys.readouterr().out


def test_run_of_a_crashing_guest_exits_4(tmp_path, capsys):
    src = tmp_path / "crash.s"
    src.write_text("start:\n    int 3           # no IDT: a triple fault\n")
    assert main(["run", str(src)]) == EXIT_CRASH == 4
    assert "triple fault" in capsys.readouterr().out


def test_exit_status_of_the_process():
    """The code reaches the shell (not only main()'s return value)."""
    r = subprocess.run([sys.executable, "-m", "vmkit.cli", "run", "hello", "--max-steps", "50"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_MAX_STEPS, r.stderr


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help_lists_every_exit_code(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code, text in EXIT_CODES.items():
        assert f"\n  {code}  {text}\n" in out + "\n"


def test_readme_documents_every_exit_code():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("Exit codes of the `vmkit` command", 1)[1][:1500]
    for code in EXIT_CODES:
        assert f"| {code} |" in section


# --- asm: every error of a file ---------------------------------------------------------------

BAD = """\
start:
    mov eax, 1
    movx eax, 2
    add eax,
    jmp nowhere
    .byte 300
    mov ebx, [eax+
    .foo 3
    ret
"""


def test_asm_reports_every_error_of_a_file(tmp_path, capsys):
    """Does `vmkit asm` go on after an error line and list each error with its place?"""
    src = tmp_path / "bad.s"
    src.write_text(BAD)
    assert main(["asm", str(src)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] == [
        f"{src}:3:5: unknown instruction 'movx'; did you mean 'movzx' or 'movsx' or 'mov'?",
        f"{src}:4:13: operand missing after ','",
        f"{src}:5:9: undefined symbol 'nowhere'",
        f"{src}:6:11: value 300 (0x12c) out of range for 8 bits (-128..255)",
        f"{src}:7:14: missing ']'",
        f"{src}:8:5: unknown directive '.foo'",
    ]
    assert err[-1] == "vmkit asm: 6 errors"


def test_asm_one_error_is_one_line(tmp_path, capsys):
    src = tmp_path / "one.s"
    src.write_text("start:\n    nop\n    movx eax, 1\n")
    assert main(["asm", str(src)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"{src}:3:5: unknown instruction 'movx'")


def test_asm_stops_at_a_cap(tmp_path, capsys):
    src = tmp_path / "many.s"
    src.write_text("".join(f"    movq eax, {i}\n" for i in range(ASM_MAX_ERRORS + 15)))
    assert main(["asm", str(src)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == ASM_MAX_ERRORS + 1
    assert err[ASM_MAX_ERRORS - 1].startswith(f"{src}:{ASM_MAX_ERRORS}:5:")
    assert err[-1] == f"vmkit asm: stopped after {ASM_MAX_ERRORS} errors"


def test_asm_errors_in_an_included_file_and_a_macro(tmp_path, capsys):
    (tmp_path / "inc.s").write_text("    movx eax, 1\n    nop\n    pop 5\n")
    (tmp_path / "main.s").write_text(
        ".macro twice x\n    add eax, \\x\n    add eax, \\x\n.endm\n"
        "start:\n    .include \"inc.s\"\n    twice ebx\n    twice [\n    jmp start\n")
    assert main(["asm", str(tmp_path / "main.s")]) == 1
    err = capsys.readouterr().err.splitlines()
    places = [":".join(e.split(":")[:2]) for e in err if not e.startswith("vmkit asm:")]
    inc = str(tmp_path / "inc.s")
    assert f"{inc}:1" in places and f"{inc}:3" in places
    assert any("in expansion of macro twice" in e for e in err)
    assert err[-1].startswith("vmkit asm: ") and err[-1].endswith(" errors")


def test_assemble_api_still_stops_at_the_first_error():
    """assemble() without max_errors raises the first error alone, as before."""
    import vmkit

    with pytest.raises(vmkit.AssemblyError) as e:
        vmkit.assemble(BAD)
    assert (e.value.line, e.value.column) == (3, 5)
    assert e.value.errors == [e.value] and not e.value.truncated
    with pytest.raises(vmkit.AssemblyError) as e:
        vmkit.assemble(BAD, max_errors=3)
    assert [x.line for x in e.value.errors] == [3, 4, 7] and e.value.truncated
    with pytest.raises(ValueError):
        vmkit.assemble(BAD, max_errors=0)


def test_a_good_file_still_assembles(tmp_path, capsys):
    src = tmp_path / "ok.s"
    src.write_text("start:\n    mov eax, 1\n    jmp start\n")
    assert main(["asm", str(src)]) == 0
    assert "mov eax, 1" in capsys.readouterr().out
