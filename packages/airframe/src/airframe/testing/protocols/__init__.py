"""One module per wire dialect: openai, azure, anthropic, ollama, llama_server.

Each module exposes `routes(state, engine) -> list[Route]`. This package imports nothing on its
own so that the engine and the protocol modules can import each other's pieces freely.
"""
