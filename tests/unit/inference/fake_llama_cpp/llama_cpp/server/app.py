"""Imported by tuneserve's start-up check (`import llama_cpp.server.app`): the fake has nothing to set up."""
