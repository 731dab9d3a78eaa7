from t0dqm.cli import main

main()
