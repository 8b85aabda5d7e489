from services.gpu_interp.app import main

main()
