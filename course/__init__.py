"""Course tooling: the graded step table (steps.py), the grader (grade.py) and the student-scaffold
generator (make_student.py). See docs/TEACHING.md."""
