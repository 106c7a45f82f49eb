"""project.yml's deps: an edit to a script re-runs the commands whose outputs it makes."""

import re

import srsly

from .conftest import ROOT

# they check the machine or the config and write nothing: an edit re-runs no training
CHECKS = {"scripts/check_gpu.py", "scripts/before_train.py"}


def test_each_command_with_outputs_depends_on_the_scripts_it_runs():
    for command in srsly.read_yaml(ROOT / "project.yml")["commands"]:
        if not command.get("outputs"):
            continue  # weasel runs it every time
        script = " ".join(command["script"])
        run = {
            m.replace(".", "/") + ".py"
            for m in re.findall(r"python -m ((?:scripts|benchmarks)\.\w+)", script)
        }
        run |= set(re.findall(r"--code (\S+)", script))
        missing = run - CHECKS - set(command.get("deps", []))
        assert not missing, f"{command['name']}: deps lack {', '.join(sorted(missing))}"
