from llmtools.cli import main

main()
