"""Using a trained run: the test report (report), predictions on files (predict), re-evaluation of a run
(evaluation), the TF Serving export (export), and the TensorFlow-free checks and requests the console
scripts make before any of those loads TensorFlow (runmodel, requests). Nothing is imported here, so
`hvdweather.evaluate.runmodel` stays TensorFlow-free."""
