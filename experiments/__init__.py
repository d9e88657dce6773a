"""The command line that runs every lesson, and the callbacks the lessons share."""
