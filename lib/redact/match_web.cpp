// URLs, emails, bare domains, IPv4 and IPv6 addresses.
#include "redact/scanner.hpp"

#include <cstring>

namespace training_output::redact {

bool Scanner::url_char(unsigned char c) {
    if (c <= 0x20 || c >= 0x7F) return false;
    switch (c) {
        case '"':
        case '<':
        case '>':
        case '\\':
        case '^':
        case '`':
        case '{':
        case '|':
        case '}':
        case '(':
        case ')':
        case '[':
        case ']': return false;
        default: return true;
    }
}

size_t Scanner::url_tail(size_t j) const {  // consumes (the match advances past it)
    while (j < n_ && url_char(s_[j])) ++j;
    return j;
}

size_t Scanner::trim_url(size_t start, size_t e) const {
    while (e > start) {
        const unsigned char c = s_[e - 1];
        if (c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?' || c == '\'' || c == '*')
            --e;
        else
            break;
    }
    return e;
}

bool Scanner::url(size_t i, Match& m) const {
    size_t p = 0;
    if (matches_ci(i, "https://"))
        p = 8;
    else if (matches_ci(i, "http://"))
        p = 7;
    else if (matches_ci(i, "ftp://"))
        p = 6;
    else if (matches_ci(i, "www.") && is_alnum(at(i + 4)))
        p = 4;
    if (p == 0) return false;
    const size_t e = trim_url(i + p, url_tail(i + p));
    if (e <= i + p) return false;
    m = {i, e, PhiType::Url};
    return true;
}

// A dotted domain at j: its end (without a trailing '.' or '-') if it has
// two labels or more, an alphabetic last label of 2+ letters, at most
// kMaxDomain bytes and no empty label; else 0. `tld` gets the last label.
size_t Scanner::domain(size_t j, size_t run_end, std::string_view& tld) const {
    size_t e = run_end;
    while (e > j && (s_[e - 1] == '.' || s_[e - 1] == '-')) --e;
    if (e <= j || e - j > kMaxDomain) return 0;
    size_t labels = 0, label_start = j;
    for (size_t k = j; k <= e; ++k) {
        if (k == e || s_[k] == '.') {
            if (k == label_start) return 0;
            ++labels;
            label_start = k + 1;
        }
    }
    if (labels < 2) return 0;
    size_t t = e;
    while (t > j && s_[t - 1] != '.') --t;
    if (e - t < 2) return 0;
    for (size_t k = t; k < e; ++k)
        if (!is_alpha(s_[k])) return 0;
    tld = std::string_view(reinterpret_cast<const char*>(s_ + t), e - t);
    return e;
}

size_t Scanner::domain_run(size_t j) const {  // scanned once per run (see the memos)
    while (j < n_ && (is_alnum(s_[j]) || s_[j] == '.' || s_[j] == '-')) ++j;
    return j;
}

bool Scanner::email(size_t i, Match& m) {
    if (i >= local_end_) {
        size_t e = i;
        while (e < n_ && local_char(s_[e])) ++e;
        local_end_ = e;
        email_end_ = 0;
        if (e > i && at(e) == '@' && is_alnum(at(e + 1))) {
            std::string_view tld;
            const size_t d = domain(e + 1, domain_run(e + 1), tld);
            if (d && at(d) < 0x80) email_end_ = d;
        }
        if (e == i) local_end_ = i + 1;
    }
    if (email_end_ == 0 || local_end_ - i > kMaxLocalPart) return false;
    m = {i, email_end_, PhiType::Email};
    return true;
}

bool Scanner::bare_domain(size_t i, Match& m) {
    if (i < domain_run_end_) return false;  // inside a run that failed
    const size_t run = domain_run(i);
    domain_run_end_ = run;
    std::string_view tld;
    const size_t e = domain(i, run, tld);
    if (!e || at(e) >= 0x80 || at(e) == '@') return false;
    // A lowercase top-level domain of the list: "well.In the" is a
    // missing space, not a domain.
    if (!in_list(tld, kTlds)) return false;
    size_t end = e;
    if (e == run && at(e) == '/') end = trim_url(e, url_tail(e));
    m = {i, end, PhiType::Url};
    return true;
}

bool Scanner::ipv4(size_t i, Match& m) const {
    size_t j = i;
    for (int part = 0; part < 4; ++part) {
        const size_t d = digits(j, 3);
        if (d == 0 || d > 3 || number(j, d) > 255) return false;
        j += d;
        if (part < 3) {
            if (at(j) != '.') return false;
            ++j;
        }
    }
    if (!number_boundary(j)) return false;
    m = {i, j, PhiType::Ip};
    return true;
}

bool Scanner::ipv6(size_t i, Match& m) const {
    if (!is_hex(s_[i])) return false;
    size_t j = i, colons = 0, doubles = 0, group = 0;
    bool hex_letter = false, tail_v4 = false;
    while (j < n_ && j - i < 40) {
        const unsigned char c = s_[j];
        if (is_hex(c)) {
            if (++group > 4) return false;
            if (!is_digit(c)) hex_letter = true;
        } else if (c == ':') {
            if (at(j + 1) == ':') {
                if (++doubles > 1) return false;
                colons += 2;
                j += 2;
                group = 0;
                continue;
            }
            ++colons;
            if (group == 0) return false;
            group = 0;
        } else {
            break;
        }
        ++j;
    }
    if (colons < 2 || colons > 8) return false;
    if (doubles == 0 && colons != 7) return false;
    if (doubles == 1 && !hex_letter && colons < 3) return false;  // "10::30"
    // An IPv4 tail ("::ffff:192.0.2.1").
    if (at(j) == '.' && group > 0 && group <= 3) {
        size_t k = j - group;
        Match v4;
        if (ipv4(k, v4)) {
            j = v4.end;
            tail_v4 = true;
        }
    }
    if (!tail_v4 && at(j - 1) == ':' && !(at(j - 2) == ':')) return false;  // ends with a lone ':'
    if (!boundary(j) || at(j) == ':') return false;
    m = {i, j, PhiType::Ip};
    return true;
}

}  // namespace training_output::redact
