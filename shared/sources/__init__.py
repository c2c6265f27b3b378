"""Input formats, one module each (segment, native, mixpanel, amplitude, csv_export): a format's models, where its
files live, how they are read and how a line maps to a row (``format.Format``). ``registry`` lists them."""
