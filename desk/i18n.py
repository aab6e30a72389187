"""The desk's words, in Bahasa Indonesia (default) and English (``?lang=en``)."""

from __future__ import annotations

LANGUAGES = ("id", "en")
WORDS: dict[str, tuple[str, str]] = {
    "title": ("Meja Verifikasi pantau", "pantau verification desk"),
    "queue": ("Antrian", "Queue"), "audit": ("Log audit", "Audit log"), "users": ("Pengguna", "Users"),
    "logout": ("Keluar", "Log out"), "login": ("Masuk", "Log in"), "username": ("Nama pengguna", "Username"),
    "password": ("Kata sandi", "Password"), "login_failed": ("Nama pengguna atau kata sandi salah.", "Wrong username or password."),
    "throttled": ("Terlalu banyak percobaan gagal. Coba lagi dalam 15 menit.", "Too many failed attempts. Try again in 15 minutes."),
    "case": ("Kasus", "Case"), "status": ("Status", "Status"), "severity": ("Tingkat", "Severity"),
    "region": ("Wilayah", "Region"), "detector": ("Detektor", "Detector"), "jenis": ("Jenis surat suara", "Ballot type"),
    "kind": ("Jenis kasus", "Case kind"), "search": ("Cari kode TPS", "Search TPS code"), "filter": ("Saring", "Filter"),
    "opened": ("Dibuka", "Opened"), "alerts": ("Peringatan", "Alerts"), "all": ("semua", "all"),
    "open": ("terbuka", "open"), "decided": ("diputuskan", "decided"), "closed": ("ditutup otomatis", "closed automatically"),
    "tps": ("TPS", "TPS"), "regional": ("statistik wilayah", "regional statistics"),
    "critical": ("kritis", "critical"), "warning": ("peringatan", "warning"), "info": ("info", "info"),
    "no_cases": ("Tidak ada kasus yang cocok.", "No matching cases."), "of": ("dari", "of"),
    "next": ("Berikutnya", "Next"), "previous": ("Sebelumnya", "Previous"),
    "form": ("Angka pada formulir C.Hasil", "Numbers as on the C.Hasil form"),
    "voters": ("I. Data pemilih dan pengguna hak pilih", "I. Voters"), "ballots": ("II. Data penggunaan surat suara", "II. Ballots"),
    "votes": ("III. Perolehan suara", "III. Votes"), "men": ("L", "M"), "women": ("P", "F"), "total": ("Jumlah", "Total"),
    "pemilih_dpt": ("Pemilih terdaftar (DPT)", "Registered voters (DPT)"),
    "pengguna_dpt": ("Pengguna hak pilih DPT", "Voters from the DPT"),
    "pengguna_dptb": ("Pengguna hak pilih DPTb", "Voters from the DPTb"),
    "pengguna_non_dpt": ("Pengguna hak pilih DPK", "Voters not on a list (DPK)"),
    "pengguna_total": ("Jumlah pengguna hak pilih", "Total voters"),
    "suara_sah": ("Suara sah", "Valid votes"), "suara_tidak_sah": ("Suara tidak sah", "Invalid votes"),
    "suara_total": ("Jumlah suara sah dan tidak sah", "Valid and invalid votes"),
    "failing": ("angka pada identitas yang gagal", "number in a failing identity"),
    "suggestions": ("Saran koreksi OCR", "OCR suggestions"), "accept": ("Terima saran", "Accept suggestion"),
    "confidence": ("keyakinan", "confidence"), "photos": ("Foto formulir C.Hasil", "C.Hasil form photos"),
    "page": ("halaman", "page"), "no_photos": ("Belum ada foto.", "No photos yet."),
    "history": ("Riwayat revisi", "Revision history"), "version": ("Versi", "Version"), "received": ("Diterima", "Received"),
    "changes": ("Perubahan", "Changes"), "first_version": ("versi pertama", "first version"),
    "context": ("Konteks wilayah", "Region context"), "peers": ("TPS sebanding", "peer TPS"),
    "turnout": ("partisipasi", "turnout"), "leader_share": ("suara terbanyak", "leader share"),
    "median": ("median", "median"), "this_tps": ("TPS ini", "this TPS"),
    "fingerprint": ("Sidik jari pemilu (partisipasi × suara terbanyak)", "Election fingerprint (turnout × leader share)"),
    "last_digits": ("Angka terakhir dari perolehan suara: teramati vs harapan", "Last digits of the vote counts: observed vs expected"),
    "observed": ("teramati", "observed"), "expected": ("harapan", "expected"), "no_data": ("tidak ada data", "no data"),
    "evidence": ("Bukti", "Evidence"), "reason": ("Alasan", "Reason"), "top_tps": ("TPS penyumbang terbesar", "Top contributing TPS"),
    "decide": ("Keputusan", "Decision"), "note": ("Catatan (wajib)", "Note (required)"),
    "corrections": ("Nilai koreksi (field=nilai per baris)", "Corrected values (field=value per line)"),
    "submit": ("Simpan keputusan", "Record decision"),
    "confirmed": ("anomali dikonfirmasi", "confirmed anomaly"), "false_alarm": ("alarm palsu", "false alarm"),
    "field_check": ("perlu cek lapangan", "needs field check"), "corrected": ("nilai dikoreksi", "corrected value"),
    "decisions": ("Keputusan sebelumnya", "Earlier decisions"), "by": ("oleh", "by"),
    "reopen": ("Buka kembali", "Reopen"), "read_only": ("Peran Anda hanya dapat membaca.", "Your role is read-only."),
    "not_open": ("Kasus ini tidak terbuka.", "This case is not open."),
    "chain_ok": ("Rantai hash utuh", "Hash chain intact"), "chain_broken": ("Rantai hash RUSAK", "Hash chain BROKEN"),
    "entries": ("entri", "entries"), "actor": ("Pelaku", "Actor"), "action": ("Tindakan", "Action"), "at": ("Waktu", "Time"),
    "subject": ("Subjek", "Subject"), "details": ("Rincian", "Details"),
    "new_user": ("Pengguna baru", "New user"), "role": ("Peran", "Role"), "display_name": ("Nama tampilan", "Display name"),
    "create": ("Buat", "Create"), "created": ("Dibuat", "Created"),
    "caveat": ("Tanda statistik adalah alasan untuk memeriksa, bukan bukti kecurangan.",
               "A statistical flag is a reason to look, not proof of fraud."),
    "saved": ("Tersimpan.", "Saved."), "error": ("Kesalahan", "Error"), "not_found": ("Tidak ditemukan.", "Not found."),
    "forbidden": ("Anda tidak berwenang.", "You are not allowed to do this."),
    "closed_reason": ("Ditutup karena", "Closed because"), "language": ("English", "Bahasa Indonesia"),
}  # fmt: skip


def translator(lang: str):
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0

    def t(key: str) -> str:
        words = WORDS.get(key)
        return words[index] if words else key

    return t
