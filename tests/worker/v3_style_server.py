#!/usr/bin/env python3
"""A user's server for the V3 PythonSession, in the style of upstream's
``test_python_server.py``; the only change for this project is the import line
(upstream: ``sys.path`` set to ``python/scripts``, then ``from server import
RenaissanceServer``). Its methods are those of the server the captures in
``tests/data/python_session/`` were made with (``add``, ``echo``, ``two_outputs``,
``hang``, anything else unknown), plus ``say`` (no tensors: the message is the
``text`` parameter) and ``calls`` (state kept across requests)."""

import sys
import time

from tsr_worker.compat import RenaissanceServer


class ServerExample(RenaissanceServer):
    def __init__(self, session_dir: str) -> None:
        super().__init__(session_dir)
        self.calls = 0

    def main_logic(self, method: str, parameters: dict[str, str]) -> tuple[bool, str, dict]:  # type: ignore[type-arg]
        self.calls += 1
        if method == "add":
            a = self.load_input_tensor(0)
            b = self.load_input_tensor(1)
            self.save_output_tensor(a + b, 0)
            return True, "Addition completed successfully", {"output_count": 1}
        if method == "echo":
            count = 0
            while (self.session_dir / f"input_{count}.tsr").exists():
                self.save_output_tensor(self.load_input_tensor(count), count)
                count += 1
            return True, "echo", {"output_count": count}
        if method == "two_outputs":
            a = self.load_input_tensor(0)
            b = self.load_input_tensor(1)
            self.save_output_tensor(a + b, 0)
            self.save_output_tensor(a - b, 1)
            return True, "two outputs written", {"output_count": 2}
        if method == "say":
            return True, parameters.get("text", ""), {}
        if method == "calls":
            return True, str(self.calls), {"calls": self.calls}
        if method == "hang":
            time.sleep(3600)
        return False, f"Unknown method: {method}", {}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("Usage: python v3_style_server.py <session_dir>")
        sys.exit(1)
    server = ServerExample(sys.argv[1])
    server.run()
    time.sleep(0.1)
