"""ECG data tooling: render signals as ECGInstruct-style pictures, synthesise a dataset, convert PTB-XL / CODE-15%."""
