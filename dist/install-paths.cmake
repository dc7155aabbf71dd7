# Runs at install time (cmake --install [--prefix P], cpack): the files that name installed paths
# (the unit's ExecStart and options file, the descriptors' binaries) are configured for the prefix
# of this install, not the one of the configure, so that `cmake --install build --prefix /usr`
# and the .deb (prefix /usr) say where the files really are. Set by the caller:
# VHOSTD_SOURCE_DIR, VHOSTD_STAGE_DIR, VHOSTD_REL_BINDIR, VHOSTD_REL_LIBEXECDIR, VHOSTD_REL_DATADIR.
set(prefix "${CMAKE_INSTALL_PREFIX}")
set(VHOSTD_BINDIR "${prefix}/${VHOSTD_REL_BINDIR}")
set(libexecdir "${prefix}/${VHOSTD_REL_LIBEXECDIR}/vhostd")
set(VHOSTD_NET_BINARY "${libexecdir}/vhostd-net")
# GNUInstallDirs' rule: /usr keeps its configuration in /etc, any other prefix in PREFIX/etc.
if(prefix STREQUAL "/usr")
  set(VHOSTD_SYSCONFDIR "/etc")
else()
  set(VHOSTD_SYSCONFDIR "${prefix}/etc")
endif()
set(stage "${VHOSTD_STAGE_DIR}")
configure_file("${VHOSTD_SOURCE_DIR}/dist/systemd/vhostd.service.in" "${stage}/vhostd.service" @ONLY)
configure_file("${VHOSTD_SOURCE_DIR}/dist/qemu/50-vhostd-blk.json.in" "${stage}/50-vhostd-blk.json" @ONLY)
configure_file("${VHOSTD_SOURCE_DIR}/dist/qemu/50-vhostd-net.json.in" "${stage}/50-vhostd-net.json" @ONLY)
file(INSTALL "${stage}/vhostd.service" DESTINATION "${prefix}/lib/systemd/system")
file(INSTALL "${stage}/50-vhostd-blk.json" "${stage}/50-vhostd-net.json"
     DESTINATION "${prefix}/${VHOSTD_REL_DATADIR}/qemu/vhost-user")
file(INSTALL "${VHOSTD_SOURCE_DIR}/dist/systemd/vhostd.conf" DESTINATION "${VHOSTD_SYSCONFDIR}/vhostd")
# vhostd-net: a relative link to vhostd.
file(RELATIVE_PATH link "${libexecdir}" "${VHOSTD_BINDIR}/vhostd")
file(MAKE_DIRECTORY "$ENV{DESTDIR}${libexecdir}")
file(CREATE_LINK "${link}" "$ENV{DESTDIR}${VHOSTD_NET_BINARY}" SYMBOLIC)
message(STATUS "Installing: $ENV{DESTDIR}${VHOSTD_NET_BINARY} -> ${link}")
