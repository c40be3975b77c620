#!/usr/bin/env python3
"""A user's server in the style of upstream's ``python_server.py`` / ``mnist_server.py``.

Written against upstream's ``tech_renaissance`` API; the only change for this project is
the import line (upstream: ``sys.path`` set to ``python/module``, then
``from tech_renaissance import ...``). It keeps state across requests like
``mnist_server.py`` (a call counter and a list of batches consumed one per request), has
single and multiple results, a command that raises, one that returns False, and the
upstream idiom that answers a wrong tag count twice (``get_tensors`` answers, then the
script writes ``invalid`` again).
"""

import sys

import torch
from tsr_worker.compat import TechRenaissanceServer, export_tsr, import_tsr  # noqa: F401

BATCHES = [torch.full((2, 2), float(i)) for i in range(3)]


class UserServer(TechRenaissanceServer):
    def __init__(self, debug: bool = False) -> None:
        super().__init__(debug=debug)
        self.calls = 0
        self.batch_id = 0

    def main_logic(self, command: str, parameters: str) -> bool:
        cmd = command.lower()
        if cmd == "hello":
            self.write_response("", f"Hello {parameters.title()}")
        elif cmd == "matmul":
            tensors = self.get_tensors(parameters, 2)
            if tensors is None:
                print("[ERROR] Failed to get tensors for matmul")
                self.write_response("", "invalid")  # upstream: a second answer
            else:
                try:
                    self.send_tensors(torch.mm(tensors[0], tensors[1]))
                except Exception as e:
                    print(f"[ERROR] matmul failed: {e}")
                    self.write_response("", "invalid")
        elif cmd == "relu":
            tensor = self.get_tensors(parameters, 1)
            if tensor is None:
                self.write_response("", "invalid")
            else:
                self.send_tensors(torch.relu(tensor))
        elif cmd == "count":  # state kept across requests
            self.calls += 1
            self.send_tensors(torch.full((1,), float(self.calls)))
        elif cmd == "data":  # like mnist_server's batches: one per request
            self.send_tensors(BATCHES[self.batch_id])
            self.batch_id += 1
        elif cmd == "split":  # several results: r0, r1
            tensor = self.get_tensors(parameters, 1)
            if tensor is None:
                self.write_response("", "invalid")
            else:
                self.send_tensors(tensor[:1], tensor[1:], tensor.to(torch.int32))
        elif cmd == "fail":
            raise RuntimeError("this command always fails")
        elif cmd == "refuse":
            return False
        elif cmd == "twice":
            self.write_response("", "First")
            self.write_response("", "Second")
        elif cmd == "float64":
            self.send_tensors(torch.zeros(2, dtype=torch.float64))
        elif cmd == "stop":
            self.write_response("", "Bye")
            self.running = False
        else:
            print(f"[ERROR] Unknown command: {command}")
            self.debug_message(f"[Python] Invalid command: {command}")
            return False
        return True


def main() -> None:
    if len(sys.argv) != 2:
        print("Usage: upstream_style_server.py <session_id>")
        sys.exit(1)
    server = UserServer(debug=False)
    server.run(sys.argv[1])


if __name__ == "__main__":
    main()
