"""`execute_command`: the pattern's shell runner. It runs whatever it is given through a
shell (`id;cat /etc/passwd` included); that is the vulnerability Conveyor's catalog closes.
The bench only ever sends `echo hello`, to a server bound to 127.0.0.1."""

import subprocess

from tasks import app


@app.task
def execute_command(command):
    completed = subprocess.run(command, shell=True, capture_output=True, text=True)
    return {"returncode": completed.returncode, "stdout": completed.stdout}
