from lifecycle.cli import main

if __name__ == "__main__":  # helper processes (spawn) import this module too
    main()
