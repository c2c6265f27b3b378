"""Push provider benchmark: our FCM adapter vs firebase-admin ``send_each`` against the fake FCM."""
