from services.splitter.app import main

main()
