"""`python -m services.backend`: vLLM spawns workers, so the engine starts under __main__."""

from services.backend.main import main

if __name__ == "__main__":
    main()
