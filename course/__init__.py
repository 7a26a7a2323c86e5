"""Course tooling: the graded step table (steps.py), the grader (grade.py: the checker, which never
imports student code, with checks_*.py, reference.py, compare.py, wire.py, sandbox.py; and the
runner side, runner.py and probes.py), the Gradescope autograder (gradescope.py, autograder.py) and
the student-scaffold generator (make_student.py). See docs/TEACHING.md."""
