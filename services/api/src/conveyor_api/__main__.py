from conveyor_api.cli import main

main()
