"""A stand-in for llama-cpp-python's `python -m llama_cpp.server --config_file FILE`, for unit tests of the process
manager (inference/llamacpp.py) only: it answers from the config file, not from a model.

As the real server does, it reads its models from the config at start and answers a model name it does not know with
its first model. Each chat answer's content is JSON: the settings of the model that answered and the request's
repeat_penalty. A user message "slow" streams three chunks a second apart (a request in flight during a restart).
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

config = json.loads(open(sys.argv[sys.argv.index("--config_file") + 1]).read())
models = {m["model_alias"]: m for m in config["models"]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, data):
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json({"object": "list", "data": [{"id": alias, "object": "model"} for alias in models]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answering = models.get(body.get("model"), config["models"][0])  # the real server's silent fallback
        content = json.dumps({"settings": answering, "repeat_penalty": body.get("repeat_penalty")})
        if not body.get("stream"):
            message = {"role": "assistant", "content": content}
            self._json({"object": "chat.completion", "model": body["model"], "choices": [{"index": 0, "message": message}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        slow = body["messages"][-1]["content"] == "slow"
        for part in [content[:10], content[10:20], content[20:]] if slow else [content]:
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": part}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if slow:
                time.sleep(1)
        self.wfile.write(b"data: [DONE]\n\n")


ThreadingHTTPServer((config["host"], config["port"]), Handler).serve_forever()
