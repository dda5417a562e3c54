"""Business logic: functions taking a session and plain values, testable without HTTP."""
