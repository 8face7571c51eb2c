#include "s3/s3_xml.hpp"

#include <cstdint>
#include <cstdlib>

namespace training_output::s3xml {
namespace {

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        out += "\xEF\xBF\xBD";  // U+FFFD for what XML does not allow
    } else if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

}  // namespace

std::string decode_entities(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        char c = text[i];
        if (c != '&') {
            out.push_back(c);
            ++i;
            continue;
        }
        auto semi = text.find(';', i);
        if (semi == std::string_view::npos || semi - i > 12) {
            out.push_back(c);
            ++i;
            continue;
        }
        std::string_view name = text.substr(i + 1, semi - i - 1);
        if (name == "quot")
            out.push_back('"');
        else if (name == "amp")
            out.push_back('&');
        else if (name == "lt")
            out.push_back('<');
        else if (name == "gt")
            out.push_back('>');
        else if (name == "apos")
            out.push_back('\'');
        else if (name.size() >= 2 && name[0] == '#') {
            bool hex = name[1] == 'x' || name[1] == 'X';
            std::string digits(name.substr(hex ? 2 : 1));
            char* end = nullptr;
            unsigned long cp = digits.empty() ? 0 : std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
            if (digits.empty() || *end != '\0') {
                out.append(text.substr(i, semi - i + 1));
            } else {
                append_utf8(out, cp > 0x10FFFF ? 0 : static_cast<std::uint32_t>(cp));
            }
        } else {
            out.append(text.substr(i, semi - i + 1));
        }
        i = semi + 1;
    }
    return out;
}

std::optional<std::string> element(std::string_view xml, std::string_view tag) {
    std::string open = "<" + std::string(tag);
    std::size_t pos = 0;
    while ((pos = xml.find(open, pos)) != std::string_view::npos) {
        std::size_t after = pos + open.size();
        if (after >= xml.size()) return std::nullopt;
        char next = xml[after];
        if (next == '/') return std::string();  // <Tag/>
        if (next != '>' && next != ' ' && next != '\t' && next != '\r' && next != '\n') {
            pos = after;  // <TagSomethingElse>
            continue;
        }
        auto gt = xml.find('>', after);
        if (gt == std::string_view::npos) return std::nullopt;
        if (xml[gt - 1] == '/') return std::string();
        std::string close = "</" + std::string(tag) + ">";
        auto end = xml.find(close, gt + 1);
        if (end == std::string_view::npos) return std::nullopt;
        return decode_entities(xml.substr(gt + 1, end - gt - 1));
    }
    return std::nullopt;
}

bool is_error(std::string_view xml) {
    std::size_t i = 0;
    auto skip_space = [&] {
        while (i < xml.size() && (xml[i] == ' ' || xml[i] == '\t' || xml[i] == '\r' || xml[i] == '\n')) ++i;
    };
    skip_space();
    if (xml.substr(i, 5) == "<?xml") {
        auto end = xml.find("?>", i);
        if (end == std::string_view::npos) return false;
        i = end + 2;
        skip_space();
    }
    return xml.substr(i, 7) == "<Error>" || xml.substr(i, 7) == "<Error ";
}

S3ErrorInfo parse_error(std::string_view xml) {
    S3ErrorInfo e;
    e.code = element(xml, "Code").value_or("");
    e.message = element(xml, "Message").value_or("");
    e.request_id = element(xml, "RequestId").value_or("");
    return e;
}

bool parse_list(std::string_view xml, ListPage& page) {
    page = ListPage{};
    if (xml.find("<ListBucketResult") == std::string_view::npos) return false;
    const auto truncated = element(xml, "IsTruncated");
    if (!truncated) return false;
    std::size_t at = 0;
    for (;;) {
        const auto open = xml.find("<Contents>", at);
        if (open == std::string_view::npos) break;
        const auto close = xml.find("</Contents>", open);
        if (close == std::string_view::npos) return false;
        const std::string_view entry = xml.substr(open, close - open);
        ListedObject o;
        auto key = element(entry, "Key");
        auto size = element(entry, "Size");
        if (!key || !size || size->empty() || size->find_first_not_of("0123456789") != std::string::npos) return false;
        o.key = std::move(*key);
        o.size = std::strtoull(size->c_str(), nullptr, 10);
        std::string etag = element(entry, "ETag").value_or("");
        if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
        o.etag = std::move(etag);
        page.objects.push_back(std::move(o));
        at = close;
    }
    if (*truncated == "true") {
        page.next = element(xml, "NextMarker").value_or(page.objects.empty() ? "" : page.objects.back().key);
        if (page.next.empty()) return false;  // more pages, but no way to ask for them
    }
    return true;
}

bool parse_delete_result(std::string_view xml, std::vector<std::string>& failed) {
    if (xml.find("<DeleteResult") == std::string_view::npos) return false;
    std::size_t at = 0;
    for (;;) {
        const auto open = xml.find("<Error>", at);
        if (open == std::string_view::npos) return true;
        const auto close = xml.find("</Error>", open);
        if (close == std::string_view::npos) return false;
        auto key = element(xml.substr(open, close - open), "Key");
        if (!key) return false;
        failed.push_back(std::move(*key));
        at = close;
    }
}

std::string escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&apos;"; break;
            default: out.push_back(c);
        }
    }
    return out;
}

}  // namespace training_output::s3xml
