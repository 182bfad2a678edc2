from corridorhub.cli import main

main()
