from services.muxer.app import main

main()
