terraform {
  backend "gcs" {
    prefix = "landline"
  }
}
