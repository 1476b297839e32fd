from nbenv.cli import run

run()
