// CRC32C (Castagnoli), as iSCSI, ext4, btrfs and NVMe use it: the checksum of every block of
// pool metadata. Chains: crc32c(b, crc32c(a)) == crc32c(a ++ b). SSE4.2 when the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vhostd {

uint32_t crc32c(const void* data, size_t len, uint32_t crc = 0);

}  // namespace vhostd
